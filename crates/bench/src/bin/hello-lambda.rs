//! The cold-start baseline: the smallest useful `lambda_runtime` function (it echoes its event), with the same
//! runtime, tokio and release profile as Tributary's functions. `cold-start` reports every function's init time as
//! a ratio to this one, measured in the same run.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) })).await
}
