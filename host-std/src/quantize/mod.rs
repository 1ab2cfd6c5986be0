//! Quantization: calibration statistics, recipes (which format each tensor gets) or a byte
//! budget that chooses them, and the converter that writes `.vspec` files.

pub mod budget;
pub mod calibrate;
pub mod convert;
pub mod knapsack;
pub mod recipe;
pub mod rotate;
pub mod sensitivity;
