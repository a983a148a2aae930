//! Shared helpers of the workspace-level tests.

pub mod aws_env;
pub mod support;
