#!/usr/bin/env python3
"""Translate infra/template.yaml (SAM) to plain CloudFormation offline, and deploy it on the moto emulator.

    emulator.py transform [--template T] [--parameter K=V ...] OUT.json
    emulator.py deploy    [--template T] [--parameter K=V ...] [--stack-name NAME] [--endpoint URL]

`transform` writes the translated template (scripts/test.sh lints it with cfn-lint). `deploy` creates the stack on
the moto server at --endpoint (default: $AWS_ENDPOINT_URL) and prints one JSON document on stdout describing what
the stack gives each function and how it is wired (tests/tests/aws_stack.rs reads it):

- functions: per logical id, the cargo binary (SAM's BuildProperties.Binary), the name, ARN and
  `Environment.Variables` exactly as lambda:GetFunctionConfiguration returns them (CloudFormation resolved the Refs);
- event_source_mappings: which queue feeds which function, batch size, batching window, FunctionResponseTypes,
  resolved to the deployed queue URL/ARN and function name;
- http_routes: method and path of each HTTP API route and the function behind it;
- schedules: each EventBridge Scheduler schedule's target function and input;
- queues (URL, ARN, attributes with the redrive policy parsed), tables (key schema, indexes, TTL), buckets
  (notification configuration, versioning), the stack's outputs;
- emulator: what moto skipped and what this script did in its place.

moto gaps this script works around, each checked on moto 5.2.5 rather than assumed:
- moto cannot run Lambda code (no Docker here), yet an AWS::Lambda::EventSourceMapping on an SQS queue makes every
  SendMessage to the queue receive a batch and try to invoke the function: the invocation fails, the batch is made
  visible again with its receive count raised, and after maxReceiveCount sends the messages land in the DLQ. The
  mappings are therefore left out of the created stack (the test plays Lambda's poller) and reported from the
  translated template, resolved to the deployed resources.
- moto's CloudFormation creates buckets without their NotificationConfiguration and VersioningConfiguration, and
  tables without their TimeToLiveSpecification; this script applies them from the translated template, resolved,
  once the stack exists (moto then sends S3 events, and the s3:TestEvent S3 sends on configuration, to the queue
  as S3 would). Each is listed under emulator.applied_by_script.
- Resource types moto's CloudFormation does not implement are skipped with a warning in the server's log; they are
  reported under emulator.skipped_resources.

No AWS account is touched: the transform runs offline (fixed managed-policy map, placeholder code location), and
every call goes to the endpoint given.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid
import zipfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEMPLATE = os.path.join(ROOT, "infra", "template.yaml")
# Where the translated functions' code is said to be; `deploy` uploads a placeholder zip there on the emulator.
CODE_BUCKET_PLACEHOLDER = "artifacts"
CODE_KEY = "code.zip"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
# Parameters a translation needs when none are given (the template has no default for them).
TRANSFORM_DEFAULTS = {
    "WorkspaceConfigUri": "s3://config-bucket/tributary.yaml",
    "DsrSigningKeyUri": "s3://config-bucket/dsr-signing.pem",
}


def fail(message: str) -> None:
    print(f"emulator.py: {message}", file=sys.stderr)
    sys.exit(1)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


# ---------------------------------------------------------------------------------------------------------------
# The SAM transform, offline.


def load_sam(path: str) -> dict[str, Any]:
    from cfnlint.decode import decode

    template, matches = decode(path)
    if matches:
        fail("\n".join(str(m) for m in matches))
    # cfn-lint's decoder gives str subclasses that carry line numbers; plain JSON types from here on.
    return json.loads(json.dumps(template, default=str))


def transform(sam: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """The plain CloudFormation SAM would deploy, with every function's code at s3://artifacts/code.zip."""
    from samtranslator.translator.transform import transform as sam_transform

    # The translator asks boto for the region of the pseudo parameters; it makes no call.
    os.environ.setdefault("AWS_DEFAULT_REGION", region())
    sam = json.loads(json.dumps(sam))
    sam.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = f"s3://{CODE_BUCKET_PLACEHOLDER}/{CODE_KEY}"
    for resource in sam.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.get("Properties", {}).pop("CodeUri", None)

    class Policies:
        # No IAM call for managed policy ARNs: the ones the template names, fixed.
        def load(self) -> dict[str, str]:
            return {
                "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
            }

    return sam_transform(sam, {**TRANSFORM_DEFAULTS, **params}, Policies())


# ---------------------------------------------------------------------------------------------------------------
# Intrinsic functions, resolved against the deployed stack (for what moto does not resolve or create itself).


class Resolver:
    def __init__(self, cfn: dict[str, Any], stack: dict[str, Any], physical: dict[str, str], clients: Clients):
        self.cfn = cfn
        self.physical = physical
        self.clients = clients
        stack_id = stack["StackId"]
        self.pseudo = {
            "AWS::StackId": stack_id,
            "AWS::StackName": stack["StackName"],
            "AWS::Region": stack_id.split(":")[3],
            "AWS::AccountId": stack_id.split(":")[4],
            "AWS::Partition": stack_id.split(":")[1],
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.params = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
        for name, spec in cfn.get("Parameters", {}).items():
            if name not in self.params and "Default" in spec:
                self.params[name] = str(spec["Default"])

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.physical:
            return self.physical[name]
        raise KeyError(f"Ref {name}: not a parameter, pseudo parameter or created resource")

    def get_att(self, name: str, attribute: str) -> Any:
        kind = self.cfn["Resources"][name]["Type"]
        physical = self.ref(name)
        if kind == "AWS::SQS::Queue":
            attrs = self.clients.sqs.get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
            return {"Arn": attrs["Attributes"]["QueueArn"], "QueueName": physical.rsplit("/", 1)[-1],
                    "QueueUrl": physical}[attribute]
        if kind == "AWS::Lambda::Function" and attribute == "Arn":
            return self.clients.awslambda.get_function_configuration(FunctionName=physical)["FunctionArn"]
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:{self.pseudo['AWS::Partition']}:s3:::{physical}"
        if kind == "AWS::DynamoDB::Table" and attribute == "Arn":
            return self.clients.dynamodb.describe_table(TableName=physical)["Table"]["TableArn"]
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return self.clients.iam.get_role(RoleName=physical)["Role"]["Arn"]
        if kind == "AWS::SNS::Topic" and attribute == "TopicArn":
            return physical
        raise KeyError(f"Fn::GetAtt {name}.{attribute} ({kind}) is not resolved by emulator.py")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.cfn["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        (fn, arg), = value.items()
        if fn == "Ref":
            return self.ref(arg)
        if fn == "Fn::GetAtt":
            name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.get_att(name, attribute)
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return self.sub(text, extra)
        if fn == "Fn::Join":
            return arg[0].join(str(v) for v in self.resolve(arg[1]))
        if fn == "Fn::Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if fn == "Fn::Split":
            return str(self.resolve(arg[1])).split(arg[0])
        if fn == "Fn::If":
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Equals":
            a, b = self.resolve(arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.resolve(arg[0])
        if fn == "Fn::And":
            return all(self.resolve(arg))
        if fn == "Fn::Or":
            return any(self.resolve(arg))
        if fn == "Condition":
            return self.condition(arg)
        if fn.startswith("Fn::"):
            raise KeyError(f"{fn} is not resolved by emulator.py")
        return {fn: self.resolve(arg)}

    def sub(self, text: str, extra: dict[str, Any]) -> str:
        out, i = [], 0
        while True:
            start = text.find("${", i)
            if start < 0:
                out.append(text[i:])
                return "".join(out)
            end = text.index("}", start)
            out.append(text[i:start])
            name = text[start + 2 : end]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in extra:
                out.append(str(extra[name]))
            elif "." in name and name.split(".", 1)[0] in self.cfn["Resources"]:
                out.append(str(self.get_att(*name.split(".", 1))))
            else:
                out.append(str(self.ref(name)))
            i = end + 1


# ---------------------------------------------------------------------------------------------------------------
# Deployment on the emulator.


class Clients:
    def __init__(self, endpoint: str):
        import boto3

        session = boto3.session.Session(region_name=region())
        make = lambda service: session.client(service, endpoint_url=endpoint)  # noqa: E731
        self.cloudformation = make("cloudformation")
        self.s3 = make("s3")
        self.sqs = make("sqs")
        self.awslambda = make("lambda")
        self.dynamodb = make("dynamodb")
        self.iam = make("iam")


def placeholder_zip() -> bytes:
    # moto stores the package and never runs it; a `bootstrap` that fails makes sure nothing pretends it ran.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\necho 'placeholder: the emulator cannot run Lambda code' >&2\nexit 1\n")
    return buf.getvalue()


def stack_events(clients: Clients, name: str) -> str:
    try:
        events = clients.cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    except Exception as e:  # noqa: BLE001 - reporting only
        return f"(no stack events: {e})"
    lines = [
        f"  {e.get('LogicalResourceId')} {e.get('ResourceType')} {e.get('ResourceStatus')} "
        f"{e.get('ResourceStatusReason') or ''}".rstrip()
        for e in reversed(events)
    ]
    return "\n".join(lines)


def create_stack(clients: Clients, name: str, cfn: dict[str, Any], params: dict[str, str], code_bucket: str) -> dict:
    # As `sam deploy` does: the template goes through S3 (it is over the 51,200 bytes a TemplateBody may hold).
    key = f"{name}.template.json"
    clients.s3.put_object(Bucket=code_bucket, Key=key, Body=json.dumps(cfn).encode())
    url = f"https://s3.{region()}.amazonaws.com/{code_bucket}/{key}"
    try:
        clients.cloudformation.create_stack(
            StackName=name,
            TemplateURL=url,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=CAPABILITIES,
        )
    except Exception as e:  # noqa: BLE001 - moto raises while creating resources: say which, with the events
        fail(f"create_stack {name} failed: {e}\nstack events:\n{stack_events(clients, name)}")
    deadline = time.monotonic() + 120
    while True:
        stack = clients.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            return stack
        if not status.endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            fail(
                f"stack {name} is {status} ({stack.get('StackStatusReason') or 'no reason given'})\n"
                f"stack events:\n{stack_events(clients, name)}"
            )
        time.sleep(0.5)


def notification_api_shape(cfn_config: dict[str, Any]) -> dict[str, Any]:
    """AWS::S3::Bucket NotificationConfiguration (resolved) in the shape of s3:PutBucketNotificationConfiguration."""

    def flt(c: dict[str, Any]) -> dict[str, Any]:
        rules = c.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        return {"Filter": {"Key": {"FilterRules": rules}}} if rules else {}

    out: dict[str, Any] = {}
    for cfn_key, api_key, target, api_target in [
        ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
        ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
        ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
    ]:
        if cfn_config.get(cfn_key):
            out[api_key] = [{api_target: c[target], "Events": [c["Event"]], **flt(c)} for c in cfn_config[cfn_key]]
    if cfn_config.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        out["EventBridgeConfiguration"] = {}
    return out


def deploy(args: argparse.Namespace, params: dict[str, str]) -> dict[str, Any]:
    endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if not endpoint:
        fail("no emulator: pass --endpoint or set AWS_ENDPOINT_URL (e.g. http://127.0.0.1:5077 for moto_server)")
    clients = Clients(endpoint)
    sam = load_sam(args.template)
    cfn = transform(sam, params)
    resources = cfn["Resources"]

    name = args.stack_name or f"tributary-{uuid.uuid4().hex[:12]}"
    code_bucket = f"tributary-code-{uuid.uuid4().hex[:16]}"
    clients.s3.create_bucket(Bucket=code_bucket)
    clients.s3.put_object(Bucket=code_bucket, Key=CODE_KEY, Body=placeholder_zip())
    binaries: dict[str, str] = {}
    for logical, r in resources.items():
        if r["Type"] == "AWS::Lambda::Function":
            r["Properties"]["Code"] = {"S3Bucket": code_bucket, "S3Key": CODE_KEY}
            sam_function = sam["Resources"].get(logical, {})
            binary = sam_function.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if binary:
                binaries[logical] = binary

    # Left out of the created stack (see the module docstring); reported below from the translated template.
    mappings = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
    for logical in mappings:
        del resources[logical]
    for r in resources.values():
        depends = r.get("DependsOn")
        if isinstance(depends, str) and depends in mappings:
            del r["DependsOn"]
        elif isinstance(depends, list):
            r["DependsOn"] = [d for d in depends if d not in mappings]

    stack = create_stack(clients, name, cfn, params, code_bucket)
    summaries: list[dict[str, Any]] = []
    paginator = clients.cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=name):
        summaries.extend(page["StackResourceSummaries"])
    physical = {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries if s.get("PhysicalResourceId")}
    created = {s["LogicalResourceId"] for s in summaries}
    resolver = Resolver(cfn, stack, physical, clients)

    report: dict[str, Any] = {
        "stack_name": name,
        "stack_id": stack["StackId"],
        "region": resolver.pseudo["AWS::Region"],
        "account_id": resolver.pseudo["AWS::AccountId"],
        "parameters": resolver.params,
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "resources": {
            k: {"type": r["Type"], "physical_id": physical.get(k)} for k, r in resources.items() if k in created
        },
        "functions": {},
        "queues": {},
        "tables": {},
        "buckets": {},
        "event_source_mappings": [],
        "http_routes": [],
        "schedules": [],
        "emulator": {
            "endpoint": endpoint,
            "code_bucket": code_bucket,
            "event_source_mappings_left_out": sorted(mappings),
            "skipped_resources": {},
            "not_created_by_condition": {},
            "applied_by_script": [],
        },
    }
    for logical, r in resources.items():
        if logical in created:
            continue
        if "Condition" in r and not resolver.condition(r["Condition"]):
            report["emulator"]["not_created_by_condition"][logical] = r["Type"]
        else:
            report["emulator"]["skipped_resources"][logical] = r["Type"]

    for logical, r in resources.items():
        if logical not in physical:
            continue
        kind, pid = r["Type"], physical[logical]
        if kind == "AWS::Lambda::Function":
            conf = clients.awslambda.get_function_configuration(FunctionName=pid)
            report["functions"][logical] = {
                "binary": binaries.get(logical),
                "name": conf["FunctionName"],
                "arn": conf["FunctionArn"],
                "environment": conf.get("Environment", {}).get("Variables", {}),
                "timeout": conf.get("Timeout"),
                "memory_size": conf.get("MemorySize"),
                "architectures": conf.get("Architectures"),
            }
        elif kind == "AWS::SQS::Queue":
            attrs = clients.sqs.get_queue_attributes(QueueUrl=pid, AttributeNames=["All"])["Attributes"]
            if "RedrivePolicy" in attrs:
                attrs["RedrivePolicy"] = json.loads(attrs["RedrivePolicy"])
            report["queues"][logical] = {"url": pid, "arn": attrs["QueueArn"], "attributes": attrs}
        elif kind == "AWS::DynamoDB::Table":
            table = clients.dynamodb.describe_table(TableName=pid)["Table"]
            ttl = clients.dynamodb.describe_time_to_live(TableName=pid)["TimeToLiveDescription"]
            wanted_ttl = resolver.resolve(r.get("Properties", {}).get("TimeToLiveSpecification"))
            if wanted_ttl and wanted_ttl.get("Enabled") and ttl.get("TimeToLiveStatus") != "ENABLED":
                clients.dynamodb.update_time_to_live(
                    TableName=pid,
                    TimeToLiveSpecification={"AttributeName": wanted_ttl["AttributeName"], "Enabled": True},
                )
                report["emulator"]["applied_by_script"].append(f"{logical}.TimeToLiveSpecification")
                ttl = clients.dynamodb.describe_time_to_live(TableName=pid)["TimeToLiveDescription"]
            report["tables"][logical] = {
                "name": pid,
                "arn": table["TableArn"],
                "key_schema": table["KeySchema"],
                "attribute_definitions": table["AttributeDefinitions"],
                "global_secondary_indexes": [
                    {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
                    for g in table.get("GlobalSecondaryIndexes", [])
                ],
                "time_to_live": ttl,
            }
        elif kind == "AWS::S3::Bucket":
            props = r.get("Properties", {})
            versioning = clients.s3.get_bucket_versioning(Bucket=pid).get("Status")
            wanted_versioning = props.get("VersioningConfiguration", {}).get("Status")
            if wanted_versioning and versioning != wanted_versioning:
                clients.s3.put_bucket_versioning(Bucket=pid, VersioningConfiguration={"Status": wanted_versioning})
                report["emulator"]["applied_by_script"].append(f"{logical}.VersioningConfiguration")
                versioning = clients.s3.get_bucket_versioning(Bucket=pid).get("Status")
            notifications = clients.s3.get_bucket_notification_configuration(Bucket=pid)
            notifications.pop("ResponseMetadata", None)
            wanted = props.get("NotificationConfiguration")
            if wanted and not notifications:
                clients.s3.put_bucket_notification_configuration(
                    Bucket=pid, NotificationConfiguration=notification_api_shape(resolver.resolve(wanted))
                )
                report["emulator"]["applied_by_script"].append(f"{logical}.NotificationConfiguration")
                notifications = clients.s3.get_bucket_notification_configuration(Bucket=pid)
                notifications.pop("ResponseMetadata", None)
            report["buckets"][logical] = {
                "name": pid,
                "versioning": versioning,
                "notification_configuration": notifications,
            }

    queue_by_arn = {q["arn"]: logical for logical, q in report["queues"].items()}
    for logical, m in sorted(mappings.items()):
        props = m["Properties"]
        function = props["FunctionName"]["Ref"] if isinstance(props["FunctionName"], dict) else props["FunctionName"]
        source_arn = resolver.resolve(props["EventSourceArn"])
        report["event_source_mappings"].append(
            {
                "logical_id": logical,
                "function": function,
                "function_name": physical.get(function),
                "queue": queue_by_arn.get(source_arn),
                "queue_url": report["queues"].get(queue_by_arn.get(source_arn, ""), {}).get("url"),
                "event_source_arn": source_arn,
                "batch_size": props.get("BatchSize"),
                "maximum_batching_window_in_seconds": props.get("MaximumBatchingWindowInSeconds"),
                "function_response_types": props.get("FunctionResponseTypes", []),
                "enabled": props.get("Enabled", True),
            }
        )

    function_by_arn = {f["arn"]: logical for logical, f in report["functions"].items()}
    for logical, r in resources.items():
        if r["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        for path, methods in r.get("Properties", {}).get("Body", {}).get("paths", {}).items():
            for method, op in methods.items():
                integration = op.get("x-amazon-apigateway-integration", {})
                uri = resolver.resolve(integration.get("uri", ""))
                arn = uri.split("/functions/", 1)[-1].removesuffix("/invocations")
                report["http_routes"].append(
                    {
                        "api": logical,
                        "method": method.upper(),
                        "path": path,
                        "function": function_by_arn.get(arn),
                        "payload_format_version": integration.get("payloadFormatVersion"),
                    }
                )
    for logical, r in resources.items():
        if r["Type"] != "AWS::Scheduler::Schedule":
            continue
        target = r["Properties"]["Target"]
        arn = resolver.resolve(target["Arn"])
        report["schedules"].append(
            {
                "logical_id": logical,
                "function": function_by_arn.get(arn),
                "input": target.get("Input"),
                "schedule_expression": resolver.resolve(r["Properties"]["ScheduleExpression"]),
                "state": r["Properties"].get("State"),
            }
        )
    return report


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--parameter {pair!r}: expected NAME=VALUE")
        params[key] = value
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("transform", "deploy"):
        p = sub.add_parser(command)
        p.add_argument("--template", default=DEFAULT_TEMPLATE)
        p.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
        if command == "transform":
            p.add_argument("out", help="where to write the translated template (JSON)")
        else:
            p.add_argument("--stack-name")
            p.add_argument("--endpoint", help="the emulator's URL (default: $AWS_ENDPOINT_URL)")
    args = parser.parse_args()
    params = parse_params(args.parameter)
    if args.command == "transform":
        with open(args.out, "w") as f:
            json.dump(transform(load_sam(args.template), params), f, indent=1)
        return
    json.dump(deploy(args, params), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
