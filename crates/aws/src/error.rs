//! Turning SDK errors into [`PortError`]s. Retryability is decided here, once per service, from the error's kind,
//! its service error code and its HTTP status.
//!
//! Error strings carry the service, the operation, the error code and the HTTP status only. Service messages are
//! left out on purpose: DynamoDB and SQS echo parameter values in them, and those values may hold personal data.

// The SDK crates share one error type (from `aws-smithy-runtime-api`); the SQS crate's re-exports name it for all.
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use tributary_core::ports::PortError;

/// What a service error code means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Throttled,
    Unavailable,
    Invalid,
    ConditionFailed,
}

/// The parts of an SDK error we decide on, with the error type erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `None` when the request never got an answer (construction, dispatch, timeout) or the answer had no code.
    pub code: Option<String>,
    pub status: Option<u16>,
    pub transport: Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The request could not be built (missing field, no region, no credentials). Retrying will not help.
    Construction,
    /// Connect errors, resets, and client-side timeouts.
    Dispatch,
    Timeout,
    /// The answer could not be read or parsed.
    Response,
    /// The service answered with an error.
    Service,
}

impl Facts {
    pub(crate) fn of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Facts {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (transport, code) = match err {
            SdkError::ConstructionFailure(_) => (Transport::Construction, None),
            SdkError::TimeoutError(_) => (Transport::Timeout, None),
            SdkError::DispatchFailure(d) if d.is_timeout() => (Transport::Timeout, None),
            SdkError::DispatchFailure(d) if d.is_user() => (Transport::Construction, None),
            SdkError::DispatchFailure(_) => (Transport::Dispatch, None),
            SdkError::ResponseError(_) => (Transport::Response, None),
            SdkError::ServiceError(s) => (Transport::Service, s.err().code().map(str::to_owned)),
            _ => (Transport::Response, None),
        };
        Facts { code, status, transport }
    }
}

/// Decides with a per-service code table, falling back on the transport and the HTTP status.
pub(crate) fn classify(service: &str, op: &str, facts: &Facts, table: fn(&str) -> Option<Kind>) -> PortError {
    let kind = match facts.transport {
        Transport::Construction => Kind::Invalid,
        Transport::Dispatch | Transport::Timeout | Transport::Response => Kind::Unavailable,
        Transport::Service => match facts.code.as_deref().and_then(table) {
            Some(kind) => kind,
            None => match facts.status {
                Some(429) => Kind::Throttled,
                Some(s) if s >= 500 => Kind::Unavailable,
                Some(408) => Kind::Unavailable,
                Some(_) => Kind::Invalid,
                None => Kind::Unavailable,
            },
        },
    };
    let what = match (&facts.code, facts.status, facts.transport) {
        (Some(code), Some(status), _) => format!("{service} {op}: {code} (http {status})"),
        (Some(code), None, _) => format!("{service} {op}: {code}"),
        (None, Some(status), _) => format!("{service} {op}: http {status}"),
        (None, None, Transport::Construction) => {
            format!("{service} {op}: request could not be built")
        }
        (None, None, Transport::Timeout) => format!("{service} {op}: timed out"),
        (None, None, Transport::Dispatch) => format!("{service} {op}: could not reach the service"),
        (None, None, _) => format!("{service} {op}: unreadable response"),
    };
    match kind {
        Kind::Throttled => PortError::Throttled(what),
        Kind::Unavailable => PortError::Unavailable(what),
        Kind::Invalid => PortError::Invalid(what),
        Kind::ConditionFailed => PortError::ConditionFailed(what),
    }
}

/// Codes shared by every AWS service (throttling, server-side trouble, credentials).
fn common_code(code: &str) -> Option<Kind> {
    Some(match code {
        "Throttling"
        | "ThrottlingException"
        | "ThrottledException"
        | "RequestThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "SlowDown"
        | "PriorRequestNotComplete"
        | "EC2ThrottledException"
        | "BandwidthLimitExceeded" => Kind::Throttled,
        "InternalError"
        | "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "IDPCommunicationError" => Kind::Unavailable,
        "AccessDenied"
        | "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken"
        | "ValidationException"
        | "ValidationError"
        | "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "MissingParameter" => Kind::Invalid,
        _ => return None,
    })
}

fn sqs_code(code: &str) -> Option<Kind> {
    // SQS answers in either the JSON protocol (`AWS.SimpleQueueService.X` or `QueueDoesNotExist`) or the query
    // protocol; normalise the prefix away.
    let code = code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code);
    Some(match code {
        "RequestThrottled" | "OverLimit" | "KmsThrottled" => Kind::Throttled,
        "KmsDisabled" | "KmsInvalidState" | "KmsNotFound" | "KmsOptInRequired" | "KmsAccessDenied"
        | "KmsInvalidKeyUsage" => Kind::Invalid,
        "NonExistentQueue"
        | "QueueDoesNotExist"
        | "QueueDeletedRecently"
        | "InvalidAddress"
        | "InvalidSecurity"
        | "InvalidAttributeName"
        | "InvalidAttributeValue"
        | "InvalidMessageContents"
        | "InvalidIdFormat"
        | "ReceiptHandleIsInvalid"
        | "MessageNotInflight"
        | "TooManyEntriesInBatchRequest"
        | "BatchRequestTooLong"
        | "BatchEntryIdsNotDistinct"
        | "EmptyBatchRequest"
        | "InvalidBatchEntryId"
        | "UnsupportedOperation"
        | "QueueNameExists"
        | "PurgeQueueInProgress" => Kind::Invalid,
        other => return common_code(other),
    })
}

fn s3_code(code: &str) -> Option<Kind> {
    Some(match code {
        "SlowDown" => Kind::Throttled,
        "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "OperationAborted" => Kind::Unavailable,
        "NoSuchBucket"
        | "NoSuchKey"
        | "NotFound"
        | "InvalidRange"
        | "InvalidBucketName"
        | "KeyTooLongError"
        | "EntityTooLarge"
        | "InvalidArgument"
        | "InvalidRequest"
        | "MalformedXML"
        | "BadDigest"
        | "InvalidDigest"
        | "PreconditionFailed"
        | "BucketAlreadyExists"
        | "BucketAlreadyOwnedByYou" => Kind::Invalid,
        other => return common_code(other),
    })
}

fn dynamodb_code(code: &str) -> Option<Kind> {
    Some(match code {
        "ProvisionedThroughputExceededException" | "RequestLimitExceeded" | "ThrottlingException" => Kind::Throttled,
        // Another transaction holds one of the items: retry with jitter.
        "TransactionConflictException" | "TransactionInProgressException" => Kind::Unavailable,
        "ConditionalCheckFailedException" => Kind::ConditionFailed,
        "ResourceNotFoundException"
        | "ResourceInUseException"
        | "ItemCollectionSizeLimitExceededException"
        | "IdempotentParameterMismatchException"
        | "SerializationException"
        | "LimitExceededException" => Kind::Invalid,
        other => return common_code(other),
    })
}

/// The SQS error helper: every SQS call's error goes through here.
pub(crate) fn sqs<E: ProvideErrorMetadata>(op: &str, err: &SdkError<E, HttpResponse>) -> PortError {
    classify("sqs", op, &Facts::of(err), sqs_code)
}

/// The S3 error helper.
pub(crate) fn s3<E: ProvideErrorMetadata>(op: &str, err: &SdkError<E, HttpResponse>) -> PortError {
    classify("s3", op, &Facts::of(err), s3_code)
}

/// The DynamoDB error helper.
pub(crate) fn dynamodb<E: ProvideErrorMetadata>(op: &str, err: &SdkError<E, HttpResponse>) -> PortError {
    classify("dynamodb", op, &Facts::of(err), dynamodb_code)
}

/// A DynamoDB transaction cancellation reason code, decided like the top-level codes.
pub(crate) fn dynamodb_reason_kind(code: &str) -> Kind {
    match code {
        "ConditionalCheckFailed" => Kind::ConditionFailed,
        "ThrottlingError" | "ProvisionedThroughputExceeded" => Kind::Throttled,
        // Another transaction holds the item: retry with jitter.
        "TransactionConflict" => Kind::Unavailable,
        _ => Kind::Invalid,
    }
}

/// The S3 service code of an error (`NoSuchKey`, `InvalidRange`, …) and its HTTP status, for the adapter's
/// "not found is `None`" decisions.
pub(crate) fn code_and_status<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> (Option<String>, Option<u16>) {
    let f = Facts::of(err);
    (f.code, f.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: Option<&str>, status: u16) -> Facts {
        Facts { code: code.map(str::to_owned), status: Some(status), transport: Transport::Service }
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for (code, status) in [
            (Some("AWS.SimpleQueueService.RequestThrottled"), 400),
            (Some("ThrottlingException"), 400),
            (None, 503),
            (None, 429),
            (Some("SomethingNew"), 500),
        ] {
            let e = classify("sqs", "SendMessageBatch", &service(code, status), sqs_code);
            assert!(e.is_retryable(), "{e}");
        }
        let e = classify("s3", "PutObject", &service(Some("SlowDown"), 503), s3_code);
        assert!(matches!(e, PortError::Throttled(_)), "{e}");
        let e = classify(
            "dynamodb",
            "TransactWriteItems",
            &service(Some("TransactionConflictException"), 400),
            dynamodb_code,
        );
        assert!(e.is_retryable(), "{e}");
    }

    #[test]
    fn client_errors_are_not_retryable() {
        for (code, status) in [
            (Some("AWS.SimpleQueueService.NonExistentQueue"), 400),
            (Some("QueueDoesNotExist"), 400),
            (Some("AccessDenied"), 403),
            (Some("ValidationException"), 400),
            (None, 404),
        ] {
            let e = classify("sqs", "ReceiveMessage", &service(code, status), sqs_code);
            assert!(matches!(e, PortError::Invalid(_)), "{e}");
        }
        let e = classify("dynamodb", "PutItem", &service(Some("ConditionalCheckFailedException"), 400), dynamodb_code);
        assert!(matches!(e, PortError::ConditionFailed(_)), "{e}");
    }

    #[test]
    fn transport_failures() {
        let f = |transport| Facts { code: None, status: None, transport };
        assert!(classify("s3", "GetObject", &f(Transport::Dispatch), s3_code).is_retryable());
        assert!(classify("s3", "GetObject", &f(Transport::Timeout), s3_code).is_retryable());
        assert!(!classify("s3", "GetObject", &f(Transport::Construction), s3_code).is_retryable());
    }

    #[test]
    fn messages_name_only_service_operation_and_code() {
        let e = classify("dynamodb", "PutItem", &service(Some("ValidationException"), 400), dynamodb_code);
        assert_eq!(e.to_string(), "invalid request: dynamodb PutItem: ValidationException (http 400)");
    }
}
