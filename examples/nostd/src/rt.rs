//! The runtime a hosted program gets from libc and std, written out for x86_64 Linux: the entry
//! point, `write` and `exit_group` as raw system calls, a bump allocator over a `static` buffer
//! of [`HEAP_BYTES`](crate::HEAP_BYTES), and the panic handler. The program is single-threaded,
//! which the allocator's `Sync` claim relies on.

use crate::HEAP_BYTES;
use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::cell::{Cell, UnsafeCell};
use core::fmt::{self, Write as _};

// The kernel enters `_start` with `rsp` 16-byte aligned and pointing at argc; a Rust function
// expects `rsp ≡ 8 (mod 16)` on entry (a return address pushed), so `_start` cannot be one. This
// stub clears the frame pointer, keeps the alignment and calls `start_rust`, which never returns.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym start_rust,
);

/// Runs `main` and exits with its code.
extern "C" fn start_rust() -> ! {
    exit(crate::main())
}

/// `write(fd, bytes)`; returns the kernel's result (bytes written, or a negative errno).
fn sys_write(fd: i32, bytes: &[u8]) -> isize {
    let ret: isize;
    // SAFETY: `write` (syscall 1) only reads `bytes.len()` bytes from `bytes.as_ptr()`, which the
    // slice guarantees readable. The kernel clobbers rcx and r11 (declared) and nothing else.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 1isize => ret,
            in("rdi") fd as isize,
            in("rsi") bytes.as_ptr(),
            in("rdx") bytes.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, readonly),
        );
    }
    ret
}

/// Ends the process with `code` (`exit_group`, syscall 231).
fn exit(code: i32) -> ! {
    // SAFETY: `exit_group` takes one integer and does not return; no memory is touched.
    unsafe {
        asm!("syscall", in("rax") 231isize, in("rdi") code as isize, options(noreturn, nostack));
    }
}

/// A file descriptor to format text into (whole writes, retried until every byte is out).
pub struct Fd(pub i32);

impl fmt::Write for Fd {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            match sys_write(self.0, rest) {
                n if n > 0 => rest = &rest[n as usize..],
                -4 => continue, // EINTR
                _ => return Err(fmt::Error),
            }
        }
        Ok(())
    }
}

/// The heap: `HEAP_BYTES` bytes handed out front to back and never reused, so what a run needs
/// is the sum of everything it allocates (plus alignment padding) — the quantity the plan's
/// load-heap bound is about.
#[repr(C, align(64))]
struct Bump {
    buf: UnsafeCell<[u8; HEAP_BYTES]>,
    /// Offset of the first free byte.
    next: Cell<usize>,
    /// The size of the request that did not fit (0 while none failed), for the panic message.
    failed: Cell<usize>,
}

// SAFETY: the program never starts a thread, so no two calls into the allocator overlap.
unsafe impl Sync for Bump {}

#[global_allocator]
static HEAP: Bump = Bump {
    buf: UnsafeCell::new([0; HEAP_BYTES]),
    next: Cell::new(0),
    failed: Cell::new(0),
};

/// Bytes handed out so far (including alignment padding).
pub fn heap_used() -> usize {
    HEAP.next.get()
}

// SAFETY: every pointer returned lies inside `buf`, is aligned to `layout.align()` and is followed
// by `layout.size()` bytes no other allocation was given (the offset only moves forward);
// failure returns null, as the trait requires.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.buf.get() as *mut u8;
        let at = base as usize + self.next.get();
        let start = at.next_multiple_of(layout.align()) - base as usize;
        match start.checked_add(layout.size()) {
            Some(end) if end <= HEAP_BYTES => {
                self.next.set(end);
                // SAFETY: `start <= end <= HEAP_BYTES`, so the pointer stays inside `buf`.
                unsafe { base.add(start) }
            }
            _ => {
                self.failed.set(layout.size().max(1));
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// The precompiled `alloc` crate refers to the unwinding personality routine; with
/// `panic = "abort"` nothing ever unwinds, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Also referenced by the precompiled `alloc` (its landing pads); never reached with
/// `panic = "abort"`, so reaching it is a bug: exit like a panic.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(101)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut err = Fd(2);
    let failed = HEAP.failed.get();
    if failed > 0 {
        // `alloc`'s default error handler panics; say what ran out instead.
        let _ = writeln!(
            err,
            "out of heap: {failed} bytes asked with {} of {HEAP_BYTES} used",
            HEAP.next.get()
        );
        exit(3);
    }
    let _ = writeln!(err, "panic: {info}");
    exit(101)
}
