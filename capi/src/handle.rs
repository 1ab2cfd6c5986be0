//! Handles: what C holds is a number, never a pointer to our memory.
//!
//! A handle's value is `tag << 48 | serial << 4`: the tag names its kind ('VM' model, 'VS'
//! session, 'VP' sampler), serials count up from 1 and are never reused, and the low four bits are
//! zero. Every call looks the value up in a process-wide registry before touching anything, so a
//! null, misaligned, forged, already-freed or wrong-kind handle is an error code: nothing is ever
//! dereferenced on the caller's word, and a handle freed twice is reported, not freed twice.

use crate::error::{Failure, Outcome, VSPEC_ERR_BUSY, VSPEC_ERR_HANDLE, VSPEC_ERR_INTERNAL};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("vspec handles carry a 16-bit tag above a 44-bit serial: 64-bit targets only");

const TAG_SHIFT: u32 = 48;
const SERIAL_SHIFT: u32 = 4;
const SERIAL_LIMIT: u64 = 1 << (TAG_SHIFT - SERIAL_SHIFT);

/// The kinds of object a handle can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Model,
    Session,
    Sampler,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Model, Kind::Session, Kind::Sampler];

    fn tag(self) -> u64 {
        match self {
            Kind::Model => u64::from(u16::from_be_bytes(*b"VM")),
            Kind::Session => u64::from(u16::from_be_bytes(*b"VS")),
            Kind::Sampler => u64::from(u16::from_be_bytes(*b"VP")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Session => "session",
            Kind::Sampler => "sampler",
        }
    }
}

/// A registered object. Models are shared (sessions keep theirs alive); sessions and samplers are
/// used by one thread at a time, which their mutex enforces.
pub(crate) enum Object {
    Model(Arc<crate::model::ModelInner>),
    Session(Arc<Mutex<crate::session::SessionCell>>),
    Sampler(Arc<Mutex<vspec_core::sample::Sampler>>),
}

impl Object {
    fn kind(&self) -> Kind {
        match self {
            Object::Model(_) => Kind::Model,
            Object::Session(_) => Kind::Session,
            Object::Sampler(_) => Kind::Sampler,
        }
    }

    fn share(&self) -> Object {
        match self {
            Object::Model(m) => Object::Model(Arc::clone(m)),
            Object::Session(s) => Object::Session(Arc::clone(s)),
            Object::Sampler(s) => Object::Sampler(Arc::clone(s)),
        }
    }
}

struct Registry {
    next_serial: u64,
    live: BTreeMap<u64, Object>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_serial: 1,
    live: BTreeMap::new(),
});

/// The registry; its state stays consistent even if a holder panicked (every update is one map
/// operation), so a poisoned lock is taken over.
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `object` and returns its handle value.
pub(crate) fn register(object: Object) -> Outcome<usize> {
    let mut reg = registry();
    let serial = reg.next_serial;
    if serial >= SERIAL_LIMIT {
        return Err(Failure::new(VSPEC_ERR_INTERNAL, "handle serials exhausted"));
    }
    reg.next_serial += 1;
    let value = object.kind().tag() << TAG_SHIFT | serial << SERIAL_SHIFT;
    reg.live.insert(value, object);
    Ok(value as usize)
}

/// Checks the shape of a handle value for `kind`, naming what is wrong with it.
fn check_value(value: usize, kind: Kind) -> Outcome<u64> {
    let v = value as u64;
    let bad = |why: String| Failure::new(VSPEC_ERR_HANDLE, why);
    if v == 0 {
        return Err(bad(format!("the {} handle is null", kind.name())));
    }
    if v & ((1 << SERIAL_SHIFT) - 1) != 0 {
        return Err(bad(format!(
            "{value:#x} is not a {} handle (misaligned: a pointer into something else?)",
            kind.name()
        )));
    }
    let tag = v >> TAG_SHIFT;
    if tag != kind.tag() {
        return Err(bad(match Kind::ALL.iter().find(|k| k.tag() == tag) {
            Some(other) => format!(
                "expected a {} handle, got a {} handle",
                kind.name(),
                other.name()
            ),
            None => format!("{value:#x} is not a vspec handle (wrong tag)"),
        }));
    }
    Ok(v)
}

fn not_live(value: usize, kind: Kind) -> Failure {
    Failure::new(
        VSPEC_ERR_HANDLE,
        format!(
            "{} handle {value:#x} is not live: already freed, or never created",
            kind.name()
        ),
    )
}

/// The object behind a live handle of `kind`.
pub(crate) fn lookup(value: usize, kind: Kind) -> Outcome<Object> {
    let v = check_value(value, kind)?;
    registry()
        .live
        .get(&v)
        .map(Object::share)
        .ok_or_else(|| not_live(value, kind))
}

/// Removes a live handle of `kind` (the object goes when its last user lets go).
pub(crate) fn unregister(value: usize, kind: Kind) -> Outcome<Object> {
    let v = check_value(value, kind)?;
    registry()
        .live
        .remove(&v)
        .ok_or_else(|| not_live(value, kind))
}

/// The model behind a handle.
pub(crate) fn model(value: usize) -> Outcome<Arc<crate::model::ModelInner>> {
    match lookup(value, Kind::Model)? {
        Object::Model(m) => Ok(m),
        _ => Err(not_live(value, Kind::Model)),
    }
}

/// Locks a session or sampler for this call; a second thread using it at the same time gets
/// `VSPEC_ERR_BUSY`, and one that panicked earlier leaves it unusable.
pub(crate) fn try_use<'a, T>(m: &'a Mutex<T>, what: &str) -> Outcome<MutexGuard<'a, T>> {
    m.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => Failure::new(
            VSPEC_ERR_BUSY,
            format!(
                "the {what} is in use by another call (another thread, or the generate \
                 callback): use one {what} per thread"
            ),
        ),
        TryLockError::Poisoned(_) => Failure::new(
            VSPEC_ERR_INTERNAL,
            format!("the {what} is unusable after an internal error; free it"),
        ),
    })
}
