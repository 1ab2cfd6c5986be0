//! C ABI (planned).
