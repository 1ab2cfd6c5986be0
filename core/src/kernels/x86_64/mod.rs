//! x86-64 kernels, one file per instruction-set tier (H5): each file holds every kernel of its
//! tier and that tier's helpers. Reached only through [`crate::kernels::KernelTable::select`].

pub mod avx2;
