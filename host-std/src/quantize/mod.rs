//! Quantization: calibration statistics, recipes (which format each tensor gets) and the
//! converter that writes `.vspec` files.

pub mod calibrate;
pub mod convert;
pub mod recipe;
pub mod rotate;
