//! Shared helpers of the workspace-level tests.

pub mod aws_env;
pub mod erasure;
pub mod people;
#[cfg(feature = "aws-integration")]
pub mod pipeline;
pub mod reference;
pub mod sdk;
pub mod stack;
pub mod stitching;
pub mod support;
