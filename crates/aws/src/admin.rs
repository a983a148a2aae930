//! Creating the resources the adapters use, for tests and local tooling (on AWS itself the SAM template creates
//! them). Every function takes and returns plain strings; "already exists" counts as success, so a tool can run
//! them again.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use tributary_core::ports::{PortError, SPARSE_INDEXES};

use crate::{error, AwsClients};

/// How long [`create_table`] waits for a new table to become active.
const TABLE_ACTIVE_WITHIN: Duration = Duration::from_secs(120);

/// Creates the SQS standard queue `name` and returns its URL. With `dlq = Some((arn_or_url, max_receive_count))`
/// the queue gets a redrive policy that moves a message to that dead-letter queue once it has been received
/// `max_receive_count` times without being deleted.
#[tracing::instrument(skip_all, fields(queue = name))]
pub async fn create_queue(aws: &AwsClients, name: &str, dlq: Option<(&str, u32)>) -> Result<String, PortError> {
    let mut req = aws.sqs.create_queue().queue_name(name);
    if let Some((target, max_receive_count)) = dlq {
        let arn = if target.starts_with("arn:") { target.to_owned() } else { queue_arn(aws, target).await? };
        let policy = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": max_receive_count.to_string(),
        });
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let out = req.send().await.map_err(|e| error::sqs("CreateQueue", &e))?;
    out.queue_url.ok_or_else(|| PortError::Unavailable("sqs CreateQueue: answer without a queue URL".into()))
}

/// The ARN of the queue at `url`.
#[tracing::instrument(skip_all)]
pub async fn queue_arn(aws: &AwsClients, url: &str) -> Result<String, PortError> {
    let out = aws
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| error::sqs("GetQueueAttributes", &e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| PortError::Unavailable("sqs GetQueueAttributes: answer without QueueArn".into()))
}

/// Creates the S3 bucket `name` in the client's region and returns its name.
#[tracing::instrument(skip_all, fields(bucket = name))]
pub async fn create_bucket(aws: &AwsClients, name: &str) -> Result<String, PortError> {
    let mut req = aws.s3.create_bucket().bucket(name);
    // us-east-1 is the default location and must not be named.
    if let Some(region) = aws.s3.config().region().map(|r| r.as_ref()).filter(|r| *r != "us-east-1") {
        let conf =
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build();
        req = req.create_bucket_configuration(conf);
    }
    match req.send().await {
        Ok(_) => Ok(name.to_owned()),
        Err(e) => match error::code_and_status(&e).0.as_deref() {
            Some("BucketAlreadyOwnedByYou") => Ok(name.to_owned()),
            _ => Err(error::s3("CreateBucket", &e)),
        },
    }
}

/// Creates the DynamoDB table `name` (string `pk` hash key, string `sk` range key, on-demand billing, TTL on
/// attribute `ttl`, and one global secondary index per sparse index of the port, as in the SAM template), waits
/// until it is active and returns its name. A table that already exists is left as it is.
#[tracing::instrument(skip_all, fields(table = name))]
pub async fn create_table(aws: &AwsClients, name: &str) -> Result<String, PortError> {
    let build_failed = |_| PortError::Invalid("dynamodb CreateTable: request could not be built".into());
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_failed)
    };
    let key =
        |n: &str, t: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(t).build().map_err(build_failed);
    let mut req = aws
        .dynamodb
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest);
    for index in &SPARSE_INDEXES {
        // Keys and `ttl` only (so scans can skip expired items): written when the attribute or the expiry
        // changes, not on every write of the item. See the ProfilesTable in infra/template.yaml.
        let projection =
            Projection::builder().projection_type(ProjectionType::Include).non_key_attributes("ttl").build();
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(index.name)
            .key_schema(key(index.attribute, KeyType::Hash)?)
            .projection(projection)
            .build()
            .map_err(build_failed)?;
        req = req.attribute_definitions(attr(index.attribute)?).global_secondary_indexes(gsi);
    }
    let res = req.send().await;
    if let Err(e) = res {
        if error::code_and_status(&e).0.as_deref() != Some("ResourceInUseException") {
            return Err(error::dynamodb("CreateTable", &e));
        }
    }

    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_WITHIN;
    loop {
        let out = aws
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| error::dynamodb("DescribeTable", &e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PortError::Unavailable(format!(
                "dynamodb CreateTable: table not active within {}s",
                TABLE_ACTIVE_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("ttl")
        .enabled(true)
        .build()
        .map_err(|_| PortError::Invalid("dynamodb UpdateTimeToLive: request could not be built".into()))?;
    match aws.dynamodb.update_time_to_live().table_name(name).time_to_live_specification(ttl).send().await {
        Ok(_) => Ok(name.to_owned()),
        Err(e) => {
            let err = error::dynamodb("UpdateTimeToLive", &e);
            // Running again on an existing table: TTL is already on.
            let (code, _) = error::code_and_status(&e);
            if code.as_deref() == Some("ValidationException") {
                tracing::debug!(error = %err, "TTL already configured.");
                Ok(name.to_owned())
            } else {
                Err(err)
            }
        }
    }
}

/// Every item of the DynamoDB table `name`, each as one line of text (`attribute=value` pairs; maps and lists
/// spelled out, binary values as lossy UTF-8), read with a strongly consistent scan of every page. For tests and
/// audits that must see everything a table holds, whatever its layout (e.g. that an erased person left nothing).
#[tracing::instrument(skip_all, fields(table = name))]
pub async fn scan_all(aws: &AwsClients, name: &str) -> Result<Vec<String>, PortError> {
    use aws_sdk_dynamodb::types::AttributeValue;

    fn text(v: &AttributeValue, out: &mut String) {
        let list = |items: &mut dyn Iterator<Item = String>, out: &mut String| {
            out.push('[');
            for (i, s) in items.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&s);
            }
            out.push(']');
        };
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => out.push_str(s),
            AttributeValue::B(b) => out.push_str(&String::from_utf8_lossy(b.as_ref())),
            AttributeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            AttributeValue::Null(_) => out.push_str("null"),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => list(&mut v.iter().cloned(), out),
            AttributeValue::Bs(v) => list(&mut v.iter().map(|b| String::from_utf8_lossy(b.as_ref()).into_owned()), out),
            AttributeValue::L(v) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    text(x, out);
                }
                out.push(']');
            }
            AttributeValue::M(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push('=');
                    text(&m[k], out);
                }
                out.push('}');
            }
            _ => out.push_str("<unknown>"),
        }
    }

    let mut lines = Vec::new();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let out = aws
            .dynamodb
            .scan()
            .table_name(name)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| error::dynamodb("Scan", &e))?;
        for item in out.items() {
            let mut keys: Vec<&String> = item.keys().collect();
            // pk and sk first, then the rest by name.
            let rank = |k: &str| (k != "pk", k != "sk");
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            let mut line = String::new();
            for k in keys {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(k);
                line.push('=');
                text(&item[k], &mut line);
            }
            lines.push(line);
        }
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(lines),
        }
    }
}

#[cfg(test)]
mod tests {
    use tributary_core::ports::SPARSE_INDEXES;

    /// [`super::create_table`] creates one global secondary index per sparse index; the SAM template must declare
    /// the same ones (name, string hash key, keys and `ttl` projected), or the deployed table lacks what the
    /// adapters scan.
    #[test]
    fn the_template_declares_every_sparse_index() {
        let template = include_str!("../../../infra/template.yaml");
        let table = template.split("\n  ProfilesTable:\n").nth(1).expect("the ProfilesTable resource");
        let table = table.split("\n\n").next().unwrap_or(table);
        for index in SPARSE_INDEXES {
            let attr = format!("- {{ AttributeName: {}, AttributeType: S }}", index.attribute);
            assert!(table.contains(&attr), "ProfilesTable must define attribute {:?}", index.attribute);
            let declared = table.split("- IndexName: ").skip(1).find(|d| d.starts_with(&format!("{}\n", index.name)));
            let Some(declared) = declared else { panic!("ProfilesTable must declare the index {:?}", index.name) };
            let declared = declared.split("- IndexName: ").next().unwrap_or(declared);
            let hash = format!("- {{ AttributeName: {}, KeyType: HASH }}", index.attribute);
            assert!(declared.contains(&hash), "index {:?} must be hashed on {:?}", index.name, index.attribute);
            assert!(
                declared.contains("ProjectionType: INCLUDE") && declared.contains("NonKeyAttributes: [ttl]"),
                "index {:?} must project keys and ttl only, as create_table does",
                index.name
            );
        }
    }
}
