//! CUDA backend (planned).
