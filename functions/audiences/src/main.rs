//! Lambda entry point: tracing, clients built once, the handler built from the environment ([`lambda::build`]),
//! then the runtime loop.
//!
//! The EventBridge Scheduler schedules invoke it with `{}` (incremental) or `{"full": true}` (full pass).
//!
//! [`lambda::build`]: tributary_audiences::lambda::build

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};
use tributary_audiences::RefreshRequest;
use tributary_aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let audiences = tributary_audiences::lambda::build(&|name| std::env::var(name), &clients).await?;
    let audiences = &audiences;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RefreshRequest>| async move {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let deadline = Instant::now() + Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        // An error fails the invocation: Lambda retries the scheduler's asynchronous invocation (twice by
        // default), and the next scheduled run picks up whatever is left; the lease keeps two runs apart.
        audiences.handle(event.payload, Some(deadline)).await.map_err(lambda_runtime::Error::from)
    }))
    .await
}
