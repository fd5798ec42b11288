//! Operator tools that sit beside the pipeline: recorded fixtures, their
//! replay and export.

pub mod fixtures;
pub mod integrity;
pub mod replay;
