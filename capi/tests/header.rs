//! `include/vspec.h` is what cbindgen makes of this crate: regenerated here and compared, so a
//! changed signature cannot ship with a stale header. `VSPEC_BLESS=1` rewrites the file.

use std::path::Path;

#[test]
fn header_is_generated_from_the_source() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = crate_dir.join("include/vspec.h");
    if std::env::var("VSPEC_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `VSPEC_BLESS=1 cargo test --release -p vspec-capi --test header` and \
         commit the result",
        path.display()
    );
}
