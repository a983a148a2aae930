//! What the queue-driven functions hand back to Lambda.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};

/// The partial batch response naming the records that must come back (`ReportBatchItemFailures`).
pub fn batch_response(failed_message_ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failed_message_ids
        .into_iter()
        .map(|item_identifier| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = item_identifier;
            f
        })
        .collect();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_by_message_id() {
        let resp = batch_response(["a".to_string(), "b".to_string()]);
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}));
        assert!(batch_response(Vec::new()).batch_item_failures.is_empty());
    }
}
