"""Properties of template.yaml that cfn-lint cannot see.

Run through scripts/check-template.sh, or `pytest tests/template` in its venv. Point
STREAMCUBE_TEMPLATE at another file to check a modified copy (that is how these tests were seen
failing: break a copy, run them on it).

Each test reads the SAM template as written (`sam`, with line numbers, and `raw`, its text for the
comments) and, where SAM adds resources or merges Globals, the plain CloudFormation the offline
transform produces (`cfn`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from itertools import combinations
from pathlib import Path
from typing import Any, Iterator

import pytest

import sam_offline

TEMPLATE = Path(os.environ.get("STREAMCUBE_TEMPLATE", sam_offline.TEMPLATE))

FUNCTIONS = {
    # logical id -> binary (crate functions/<binary>)
    "IngestApiFunction": "ingest-api",
    "ErasureFunction": "erasure",
    "CubeQueryFunction": "cube-query",
    "BronzeProcessorFunction": "bronze-processor",
    "CubeConsolidatorFunction": "cube-consolidator",
    "StreamMarkerFunction": "cube-consolidator",
    "KafkaIngestFunction": "kafka-ingest",
}
# logical id -> the function's name after the stack's, where it is not its binary's
NAMES = {"StreamMarkerFunction": "stream-marker"}


def function_name(logical_id: str) -> str:
    return NAMES.get(logical_id, FUNCTIONS[logical_id])


PSEUDONYMIZING = {"IngestApiFunction", "ErasureFunction", "BronzeProcessorFunction", "KafkaIngestFunction"}
ROUTES = {
    ("/v1/events", "post"): "IngestApiFunction",
    ("/v1/health", "get"): "IngestApiFunction",
    ("/v1/viewers/{viewer_id}", "delete"): "ErasureFunction",
    ("/v1/cube", "get"): "CubeQueryFunction",
}
ENVIRONMENT = {
    "STREAMCUBE_BACKEND",
    "STREAMCUBE_SILVER_TABLE",
    "STREAMCUBE_CUBE_TABLE",
    "STREAMCUBE_CATALOG_TABLE",
    "STREAMCUBE_BRONZE_BUCKET",
    "STREAMCUBE_LAKE_BUCKET",
    "STREAMCUBE_GLUE_DATABASE",
    "STREAMCUBE_GLUE_TABLE",
    "STREAMCUBE_SERVED_COUNTRIES",
    "STREAMCUBE_RETENTION_DAYS",
    "STREAMCUBE_CUBOIDS",
    "RUST_LOG",
}
PULL_EVENTS = {"DynamoDB", "Kinesis", "MSK", "SelfManagedKafka", "SQS"}
WILDCARD_COMMENT = re.compile(r"#\s*wildcard:\s*\S.{15,}")


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return sam_offline.load(TEMPLATE)


@pytest.fixture(scope="module")
def raw() -> list[str]:
    return TEMPLATE.read_text().splitlines()


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return sam_offline.translate(sam)


def of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def ref(value: Any) -> str | None:
    """The logical id behind {"Ref": X} or {"Fn::GetAtt": [X, ...]}."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return str(arg)
        if key == "Fn::GetAtt":
            return str(arg[0] if isinstance(arg, list) else arg.split(".")[0])
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy statement anywhere in the template, with the resource it belongs to."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if isinstance(node.get("Statement"), list):
                for s in node["Statement"]:
                    yield where, s
            for v in node.values():
                yield from walk(v, where)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v, where)

    for name, resource in template["Resources"].items():
        yield from walk(resource, name)


def role_statements(sam: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = ref(sam["Resources"][function]["Properties"]["Role"])
    assert role, f"{function} must use a role written in the template"
    props = sam["Resources"][role]["Properties"]
    return [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def allows(stmts: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in stmts if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def strings(value: Any) -> Iterator[str]:
    """The literal strings inside a value, through intrinsic functions (Fn::Sub templates too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def is_wildcard_resource(s: str) -> bool:
    # "<prefix>/*" scopes an S3 key prefix, a table's indexes or streams: the narrowest form.
    return "*" in s and not (s.endswith("/*") and "*" not in s[:-1])


def events(sam: dict[str, Any], function: str) -> dict[str, dict[str, Any]]:
    return sam["Resources"][function]["Properties"].get("Events", {})


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------
def test_every_function_is_a_cargo_lambda_binary_on_al2023(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    functions = of_type(sam, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTIONS)
    glob = sam["Globals"]["Function"]
    assert glob["Runtime"] == "provided.al2023" and glob["Handler"] == "bootstrap"
    assert glob["CodeUri"] == "."
    assert glob["Architectures"] == [{"Ref": "Architecture"}]
    arch = sam["Parameters"]["Architecture"]
    assert arch["Default"] == "arm64" and set(arch["AllowedValues"]) == {"arm64", "x86_64"}
    for name, fn in functions.items():
        assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        assert fn["Metadata"]["BuildProperties"]["Binary"] == FUNCTIONS[name], name
        assert fn["Properties"]["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{function_name(name)}"}
        assert "Runtime" not in fn["Properties"] or fn["Properties"]["Runtime"] == "provided.al2023"
    for name, fn in of_type(cfn, "AWS::Lambda::Function").items():
        props = fn["Properties"]
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        memory = props["MemorySize"]
        if isinstance(memory, dict):  # a parameter: its bounds and default
            param = cfn["Parameters"][memory["Ref"]]
            assert 128 <= param["MinValue"] and param["MaxValue"] <= 10240, name
            memory = param["Default"]
        assert 128 <= memory <= 10240 and 1 <= props["Timeout"] <= 900, name
        assert not props.get("ManagedPolicyArns"), name


def test_every_function_logs_json_to_its_own_log_group_with_retention(
    sam: dict[str, Any], cfn: dict[str, Any]
) -> None:
    groups = set()
    for name, fn in of_type(cfn, "AWS::Lambda::Function").items():
        logging = fn["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", name
        group = ref(logging["LogGroup"])
        assert group and group not in groups, f"{name} needs a log group of its own"
        groups.add(group)
        lg = cfn["Resources"][group]
        assert lg["Type"] == "AWS::Logs::LogGroup"
        assert lg["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"}, f"{group}: retention"
        assert lg["Properties"]["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{function_name(name)}"
        }
        assert lg.get("Condition") == fn.get("Condition"), f"{group} and {name} must exist together"
        # The role may write there and nowhere else.
        logs = [s for s in role_statements(sam, name) if "logs:PutLogEvents" in as_list(s["Action"])]
        assert [ref(s["Resource"]) for s in logs] == [group], name


def test_every_function_has_an_on_failure_path(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    """Asynchronous invocations (S3, the schedule, self-continuation) end in a destination or a DLQ; stream and
    Kafka batches in the event source's on-failure destination; a function the HTTP API calls
    synchronously answers its error to the caller, so it must have no other trigger."""
    invoke_configs = {
        ref(r["Properties"]["FunctionName"]): r["Properties"]
        for r in of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
    }
    for name in FUNCTIONS:
        props = sam["Resources"][name]["Properties"]
        evts = events(sam, name)
        assert evts, f"{name} has no trigger"
        kinds = {e["Type"] for e in evts.values()}
        self_invoking = any(
            allows([s], "lambda:InvokeFunction") and "bronze-processor" in "".join(strings(s["Resource"]))
            for s in role_statements(sam, name)
        )
        failure_targets = []
        if kinds & {"S3", "Schedule"} or self_invoking:
            config = invoke_configs.get(name, {})
            target = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination") or props.get(
                "DeadLetterQueue", {}
            ).get("TargetArn")
            assert target, f"{name} is invoked asynchronously and needs an on-failure destination or a DLQ"
            assert isinstance(config.get("MaximumRetryAttempts"), int), name
            failure_targets.append(target)
        for event_name, event in evts.items():
            if event["Type"] in PULL_EVENTS:
                target = event["Properties"].get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                assert target, f"{name}.{event_name} needs DestinationConfig.OnFailure"
                failure_targets.append(target)
        if kinds == {"HttpApi"}:
            continue
        assert failure_targets, f"{name}: triggers {kinds} need an on-failure path"
        for target in failure_targets:
            queue = ref(target)
            assert sam["Resources"][queue]["Type"] == "AWS::SQS::Queue", name
            senders = allows(role_statements(sam, name), "sqs:SendMessage")
            assert [ref(s["Resource"]) for s in senders] == [queue], f"{name} must be able to send to {queue}"


def test_every_function_has_errors_and_throttles_alarms(sam: dict[str, Any]) -> None:
    alarms = of_type(sam, "AWS::CloudWatch::Alarm").values()
    for name in FUNCTIONS:
        for metric in ("Errors", "Throttles"):
            found = [
                a["Properties"]
                for a in alarms
                if a["Properties"].get("Namespace") == "AWS/Lambda"
                and a["Properties"].get("MetricName") == metric
                and {"Name": "FunctionName", "Value": {"Ref": name}} in a["Properties"]["Dimensions"]
            ]
            assert len(found) == 1, f"{name} needs one {metric} alarm"
            assert found[0]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_every_function_gets_the_shared_environment(cfn: dict[str, Any]) -> None:
    for name, fn in of_type(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert ENVIRONMENT <= set(variables), f"{name} lacks {ENVIRONMENT - set(variables)}"
        assert variables["STREAMCUBE_BACKEND"] == "aws"
        assert variables["RUST_LOG"] == {"Ref": "LogLevel"}
        # Empty Cuboids must leave the variable out (the full cube), not set it to "".
        assert variables["STREAMCUBE_CUBOIDS"] == {
            "Fn::If": ["HasCuboids", {"Ref": "Cuboids"}, {"Ref": "AWS::NoValue"}]
        }


def test_only_pseudonymizing_functions_read_the_key(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    secret = of_type(sam, "AWS::SecretsManager::Secret")
    assert list(secret) == ["PseudonymSecret"]
    generated = secret["PseudonymSecret"]["Properties"]["GenerateSecretString"]
    assert generated["SecretStringTemplate"] == '{"key_id":"k1"}' and generated["GenerateStringKey"] == "key"
    assert generated["PasswordLength"] >= 32
    key = ref(secret["PseudonymSecret"]["Properties"]["KmsKeyId"])
    assert sam["Resources"][key]["Properties"]["EnableKeyRotation"] is True
    for name in FUNCTIONS:
        stmts = role_statements(sam, name)
        reads = allows(stmts, "secretsmanager:GetSecretValue")
        decrypts = allows(stmts, "kms:Decrypt")
        env = cfn["Resources"][name]["Properties"]["Environment"]["Variables"]
        if name in PSEUDONYMIZING:
            assert [s["Resource"] for s in reads] == [{"Ref": "PseudonymSecret"}], name
            assert [ref(s["Resource"]) for s in decrypts] == [key], name
            assert "kms:ViaService" in decrypts[0]["Condition"]["StringEquals"], name
            assert env["STREAMCUBE_PSEUDONYM_SECRET_ARN"] == {"Ref": "PseudonymSecret"}, name
        else:
            assert not reads and not decrypts, f"{name} does not pseudonymize: no key for it"
            assert "STREAMCUBE_PSEUDONYM_SECRET_ARN" not in env, name


def test_consolidating_roles_may_write_every_export_the_code_writes(sam: dict[str, Any]) -> None:
    # The keys come from the code that writes them (shared/pipeline/src/export.rs).
    source = (TEMPLATE.parent / "shared" / "pipeline" / "src" / "export.rs").read_text()
    gold = re.search(r'pub const GOLD_PREFIX: &str = "([^"]+)";', source)
    csv = re.search(r'format!\("([^"{]+)day=\{\}/cube\.csv"', source)
    assert gold and csv, "export.rs no longer says where the exports go"
    keys = [f"{gold.group(1)}day=2026-11-01/cube.parquet", f"{csv.group(1)}day=2026-11-01/cube.csv"]
    for function in ("CubeConsolidatorFunction", "ErasureFunction"):
        granted = [
            r.removeprefix("${LakeBucket.Arn}/")
            for s in allows(role_statements(sam, function), "s3:PutObject")
            for r in strings(s["Resource"])
            if r.startswith("${LakeBucket.Arn}/")
        ]
        for key in keys:
            assert any(fnmatch.fnmatchcase(key, g) for g in granted), f"{function} may not write {key}"


def test_cube_query_only_reads_the_cube(sam: dict[str, Any]) -> None:
    data = [s for s in role_statements(sam, "CubeQueryFunction") if s["Sid"] not in ("Logs", "Tracing")]
    assert [ref(s["Resource"]) for s in data] == ["CubeTable"]
    assert set(as_list(data[0]["Action"])) == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"}


def test_stream_marker_reads_the_silver_stream_in_reported_batches(sam: dict[str, Any]) -> None:
    """The stream is read by a function of its own: a batch only marks hours, so it needs no
    reserved concurrency (one reader per shard would wait behind the consolidator's runs), little
    memory, and no access to the cube table beyond the change feed's items."""
    props = sam["Resources"]["StreamMarkerFunction"]["Properties"]
    (stream,) = [e["Properties"] for e in props["Events"].values() if e["Type"] == "DynamoDB"]
    assert stream["Stream"] == {"Fn::GetAtt": ["SilverTable", "StreamArn"]}
    assert stream["StartingPosition"] == "LATEST"
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BisectBatchOnFunctionError"] is True
    assert 100 <= stream["BatchSize"] <= 10000 and stream["MaximumBatchingWindowInSeconds"] > 0
    assert stream["MaximumRetryAttempts"] >= 0 and stream["MaximumRecordAgeInSeconds"] > 0
    assert "ReservedConcurrentExecutions" not in props
    assert props["MemorySize"] <= 512 and props["Timeout"] <= 120
    readers = [
        name
        for name in FUNCTIONS
        if any(e["Type"] == "DynamoDB" for e in events(sam, name).values())
        or allows(role_statements(sam, name), "dynamodb:GetRecords")
    ]
    assert readers == ["StreamMarkerFunction"]
    data = [s for s in role_statements(sam, "StreamMarkerFunction") if s["Sid"] not in ("Logs", "Tracing")]
    cube = [s for s in data if ref(s["Resource"]) == "CubeTable"]
    assert len(cube) == 1 and as_list(cube[0]["Action"]) == ["dynamodb:UpdateItem"]
    # shared/aws/src/changes.rs: the feed's partition key
    source = (TEMPLATE.parent / "shared" / "aws" / "src" / "changes.rs").read_text()
    pk = re.search(r'const PK: &str = "([^"]+)";', source)
    assert pk, "changes.rs no longer names the change feed's partition key"
    assert cube[0]["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [pk.group(1)]}}
    others = {ref(s["Resource"]) for s in data if s not in cube}
    assert others == {"SilverTable", "StreamDlq", None}, others  # None: the stream list's Sub


def test_consolidator_publishes_the_marked_hours_on_its_schedule(sam: dict[str, Any]) -> None:
    """stream-marker marks hours (in the cube table); an EventBridge schedule has the consolidator
    publish them. A failed run leaves its hours pending for the next, so it is not retried sooner,
    by EventBridge or by Lambda."""
    props = sam["Resources"]["CubeConsolidatorFunction"]["Properties"]
    assert [e["Type"] for e in props["Events"].values()] == ["Schedule"]
    (schedule,) = [e["Properties"] for e in props["Events"].values()]
    assert schedule["Schedule"] == {"Ref": "ConsolidationSchedule"}
    assert schedule["RetryPolicy"]["MaximumRetryAttempts"] == 0
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    default = sam["Parameters"]["ConsolidationSchedule"]["Default"]
    minutes = re.fullmatch(r"rate\((\d+) minutes\)", default)
    assert minutes and 5 <= int(minutes.group(1)) <= 60, default
    assert props["EventInvokeConfig"]["MaximumEventAgeInSeconds"] <= int(minutes.group(1)) * 60
    assert props["Timeout"] == 900
    assert "ReservedConcurrentExecutions" in props
    assert sam["Parameters"]["ConsolidatorReservedConcurrency"]["Default"] <= 5
    # Closing a day holds its day level and both exports in memory: 1.57 GB at 10M events a day
    # and 5.1 GB at 100M (measured), so 4,096 MB would fail every night at 100M.
    assert props["MemorySize"] == {"Ref": "ConsolidatorMemorySize"}
    assert sam["Parameters"]["ConsolidatorMemorySize"]["Default"] >= 8192
    cube = [s for s in role_statements(sam, "CubeConsolidatorFunction") if ref(s["Resource"]) == "CubeTable"]
    actions = {a for s in cube for a in as_list(s["Action"])}
    assert {"dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:DeleteItem"} <= actions


def test_bronze_processor_continues_itself_by_name(sam: dict[str, Any]) -> None:
    props = sam["Resources"]["BronzeProcessorFunction"]["Properties"]
    assert props["Timeout"] == 900 and props["MemorySize"] == 1024
    (invoke,) = allows(role_statements(sam, "BronzeProcessorFunction"), "lambda:InvokeFunction")
    assert invoke["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
        "${AWS::StackName}-bronze-processor"
    }
    assert props["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-bronze-processor"}


def test_bronze_notifications_cover_the_formats_without_overlapping(sam: dict[str, Any]) -> None:
    filters = []
    for name in FUNCTIONS:
        for event in events(sam, name).values():
            if event["Type"] != "S3":
                continue
            assert name == "BronzeProcessorFunction"
            assert event["Properties"]["Bucket"] == {"Ref": "BronzeBucket"}
            assert event["Properties"]["Events"] == "s3:ObjectCreated:*"
            rules = {r["Name"]: r["Value"] for r in event["Properties"]["Filter"]["S3Key"]["Rules"]}
            filters.append((rules["prefix"], rules["suffix"]))
    # S3 refuses two configurations for the same event whose prefixes and suffixes both overlap.
    for (p1, s1), (p2, s2) in combinations(filters, 2):
        prefixes_overlap = p1.startswith(p2) or p2.startswith(p1)
        suffixes_overlap = s1.endswith(s2) or s2.endswith(s1)
        assert not (prefixes_overlap and suffixes_overlap), f"{p1}*{s1} overlaps {p2}*{s2}"
    assert sorted(filters) == sorted(
        [("events/", s) for s in (".csv", ".csv.gz", ".jsonl", ".jsonl.gz")] + [("reference/catalog/", ".csv")]
    )


# --------------------------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------------------------
def test_every_route_has_an_authorizer_unless_the_stage_is_dev(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    apis = of_type(cfn, "AWS::ApiGatewayV2::Api")
    assert list(apis) == ["HttpApi"], "every route must be on the one API whose routes carry security"
    body = apis["HttpApi"]["Properties"]["Body"]
    dev_conditions = {
        name for name, c in sam["Conditions"].items() if c == {"Fn::Equals": [{"Ref": "Stage"}, "dev"]}
    }
    schemes = body["components"]["securitySchemes"]
    c, when_dev, defined = schemes["Fn::If"]
    assert c in dev_conditions and when_dev == {}
    jwt = defined["jwt"]["x-amazon-apigateway-authorizer"]
    assert jwt["type"] == "jwt"
    assert jwt["jwtConfiguration"] == {"issuer": {"Ref": "JwtIssuer"}, "audience": [{"Ref": "JwtAudience"}]}

    seen = {}
    for path, methods in body["paths"].items():
        for method, op in methods.items():
            if method == "options":
                continue  # CORS preflight, answered by API Gateway
            security = op.get("security")
            if isinstance(security, dict):
                c, when_dev, otherwise = security["Fn::If"]
                assert c in dev_conditions and when_dev == [], f"{method} {path}: only dev may drop auth"
                security = otherwise
            assert security, f"{method.upper()} {path} has no authorizer"
            for requirement in security:
                assert set(requirement) <= set(defined), f"{method} {path}: unknown scheme {requirement}"
            uri = op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            target = re.search(r"functions/\$\{(\w+)\.Arn\}/invocations", uri)
            assert target, uri
            seen[(path, method)] = target.group(1)
    assert seen == ROUTES

    # Outside dev, a deployment without issuer or audience is refused.
    rule = sam["Rules"]["AuthorizerOutsideDev"]
    assert rule["RuleCondition"] == {"Fn::Not": [sam["Conditions"][next(iter(dev_conditions))]]}
    asserted = {str(a["Assert"]["Fn::Not"][0]["Fn::Equals"][0]["Ref"]) for a in rule["Assertions"]}
    assert asserted == {"JwtIssuer", "JwtAudience"}


def test_http_api_throttles_logs_and_allows_the_dashboard(cfn: dict[str, Any]) -> None:
    (stage,) = of_type(cfn, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert props["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    group = ref(props["AccessLogSettings"]["DestinationArn"])
    assert cfn["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # Paths can carry raw viewer ids: the access log records the route template instead.
    assert "$context.path" not in props["AccessLogSettings"]["Format"]
    assert "$context.routeKey" in props["AccessLogSettings"]["Format"]
    cors = cfn["Resources"]["HttpApi"]["Properties"]["Body"]["x-amazon-apigateway-cors"]
    assert cors["allowOrigins"] != ["*"] and len(cors["allowOrigins"]) == 1
    # The dashboard can read the request id of an error and a 503's Retry-After.
    assert set(cors["exposeHeaders"]) == {"x-request-id", "retry-after"}


# --------------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------------
def test_every_table_is_on_demand_encrypted_and_recoverable(sam: dict[str, Any]) -> None:
    tables = of_type(sam, "AWS::DynamoDB::Table")
    assert set(tables) == {"SilverTable", "CubeTable", "CatalogTable"}
    for name, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
        assert props["SSESpecification"]["SSEEnabled"] is True, name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert props["DeletionProtectionEnabled"] == {"Ref": "TableDeletionProtection"}, name


def test_table_keys_and_indexes_are_the_ones_the_code_uses(sam: dict[str, Any]) -> None:
    def keys(schema: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(k["AttributeName"], k["KeyType"]) for k in schema]

    silver = sam["Resources"]["SilverTable"]["Properties"]
    assert keys(silver["KeySchema"]) == [("event_id", "HASH")]
    types = {a["AttributeName"]: a["AttributeType"] for a in silver["AttributeDefinitions"]}
    assert types == {"event_id": "S", "hour_shard": "S", "viewer": "S"}
    gsis = {g["IndexName"]: g for g in silver["GlobalSecondaryIndexes"]}
    assert keys(gsis["by_hour"]["KeySchema"]) == [("hour_shard", "HASH"), ("event_id", "RANGE")]
    assert gsis["by_hour"]["Projection"] == {"ProjectionType": "ALL"}
    assert keys(gsis["by_viewer"]["KeySchema"]) == [("viewer", "HASH"), ("event_id", "RANGE")]
    assert gsis["by_viewer"]["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["hour"]}
    assert silver["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert silver["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    cube = sam["Resources"]["CubeTable"]["Properties"]
    assert keys(cube["KeySchema"]) == [("pk", "HASH"), ("sk", "RANGE")]
    catalog = sam["Resources"]["CatalogTable"]["Properties"]
    assert keys(catalog["KeySchema"]) == [("content_id", "HASH")]


def test_no_bucket_is_public_unencrypted_or_reachable_without_tls(sam: dict[str, Any]) -> None:
    buckets = of_type(sam, "AWS::S3::Bucket")
    assert set(buckets) == {"BronzeBucket", "LakeBucket", "DashboardBucket"}
    policies = {ref(p["Properties"]["Bucket"]): p["Properties"]["PolicyDocument"] for p in
                of_type(sam, "AWS::S3::BucketPolicy").values()}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        block = props["PublicAccessBlockConfiguration"]
        assert all(block.get(k) is True for k in (
            "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")), name
        (sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms", "aws:kms:dsse"), name
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}], name
        assert props["LifecycleConfiguration"]["Rules"], name
        assert name in policies, f"{name} needs a bucket policy"
        tls = [
            s for s in policies[name]["Statement"]
            if s["Effect"] == "Deny"
            and s["Principal"] == "*"
            and s["Action"] == "s3:*"
            and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(tls) == 1, f"{name} needs a TLS-only Deny statement"
        covered = {ref(r) or "".join(strings(r)) for r in tls[0]["Resource"]}
        assert covered == {name, f"${{{name}.Arn}}/*"}, name
        # Nothing public: every Allow names a service or an account, never "*".
        for s in policies[name]["Statement"]:
            if s["Effect"] == "Allow":
                assert s["Principal"] != "*" and s["Principal"] != {"AWS": "*"}, name


def test_dashboard_bucket_is_read_only_by_its_distribution(sam: dict[str, Any]) -> None:
    (policy,) = [p for p in of_type(sam, "AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": "DashboardBucket"}]
    (allow,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"} and allow["Action"] == "s3:GetObject"
    source = allow["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]
    assert source.endswith(":distribution/${DashboardDistribution}")
    (origin,) = sam["Resources"]["DashboardDistribution"]["Properties"]["DistributionConfig"]["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["DashboardOriginAccessControl", "Id"]}


def test_lake_expires_reports_quarantine_and_replaced_versions(sam: dict[str, Any]) -> None:
    rules = {r["Id"]: r for r in sam["Resources"]["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    by_prefix = {r.get("Prefix"): r for r in rules.values() if r["Status"] == "Enabled"}
    assert by_prefix["reports/"]["ExpirationInDays"] == {"Ref": "ReportRetentionDays"}
    assert by_prefix["quarantine/"]["ExpirationInDays"] == {"Ref": "QuarantineRetentionDays"}
    for bucket in ("LakeBucket", "BronzeBucket"):
        props = sam["Resources"][bucket]["Properties"]
        assert props["VersioningConfiguration"]["Status"] == "Enabled", bucket
        assert any("NoncurrentVersionExpiration" in r for r in props["LifecycleConfiguration"]["Rules"]), bucket


def test_quarantine_is_read_only_by_the_bronze_processor_and_a_named_reader(sam: dict[str, Any]) -> None:
    statements = sam["Resources"]["LakeBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = next(s for s in statements if s.get("Sid") == "QuarantineReadOnlyByItsRoles")
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert set(deny["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    assert deny["Resource"] == {"Fn::Sub": "${LakeBucket.Arn}/quarantine/*"}
    allowed = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert {"Fn::GetAtt": ["BronzeProcessorRole", "Arn"]} in allowed
    assert sam["Parameters"]["QuarantineReaderArn"]["Default"] == ""


def test_raw_viewer_ids_expire_and_stay_out_of_logs_by_default(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    # Erasure reaches the raw zones (bronze, quarantine) only through their expiry.
    assert 0 < params["BronzeRetentionDays"]["Default"] <= 31
    assert 0 < params["QuarantineRetentionDays"]["Default"] <= 31
    # At trace level the Lambda runtime logs whole invocation payloads (raw viewer ids).
    assert "trace" not in params["LogLevel"]["AllowedValues"]


def test_gold_table_is_queryable_without_a_crawler(sam: dict[str, Any]) -> None:
    table = sam["Resources"]["CubeGlueTable"]["Properties"]["TableInput"]
    assert table["Name"] == "cube" and table["TableType"] == "EXTERNAL_TABLE"
    assert table["PartitionKeys"] == [{"Name": "day", "Type": "string"}]
    params = table["Parameters"]
    assert params["projection.enabled"] == "true" and params["projection.day.type"] == "date"
    assert params["projection.day.format"] == "yyyy-MM-dd"
    assert params["storage.location.template"] == {"Fn::Sub": "s3://${LakeBucket}/gold/cube/day=${!day}/"}
    storage = table["StorageDescriptor"]
    assert storage["Location"] == {"Fn::Sub": "s3://${LakeBucket}/gold/cube/"}
    assert "parquet" in storage["SerdeInfo"]["SerializationLibrary"].lower()
    columns = [(c["Name"], c["Type"]) for c in storage["Columns"]]
    assert columns == [
        ("hour", "int"), ("level", "string"), ("country", "string"), ("device", "string"),
        ("genre", "string"), ("content_id", "string"), ("plays", "bigint"), ("watch_seconds", "bigint"),
        ("completed", "bigint"), ("buffering_ms", "bigint"), ("bitrate_sum", "bigint"),
        ("bitrate_count", "bigint"), ("unique_viewers", "bigint"),
    ]


# --------------------------------------------------------------------------------------------
# failure queues and IAM
# --------------------------------------------------------------------------------------------
def test_every_dlq_is_encrypted_keeps_14_days_and_has_an_alarm(sam: dict[str, Any]) -> None:
    queues = of_type(sam, "AWS::SQS::Queue")
    assert queues
    alarms = of_type(sam, "AWS::CloudWatch::Alarm").values()
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name
        assert props["MessageRetentionPeriod"] == 1209600, name
        found = [
            a for a in alarms
            if a["Properties"]["Namespace"] == "AWS/SQS"
            and a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
            and a["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [name, "QueueName"]}}]
        ]
        assert len(found) == 1, f"{name} needs an alarm"
        alarm = found[0]
        assert alarm.get("Condition") == queue.get("Condition"), name
        p = alarm["Properties"]
        assert p["Threshold"] == 0 and p["ComparisonOperator"] == "GreaterThanThreshold", name
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}], name


def test_alarm_topic_mails_only_when_an_address_is_given(sam: dict[str, Any]) -> None:
    subs = of_type(sam, "AWS::SNS::Subscription")
    assert all(s.get("Condition") == "HasAlarmEmail" for s in subs.values()) and subs
    assert sam["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def test_no_generated_role_and_no_managed_policy(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    assert set(of_type(cfn, "AWS::IAM::Role")) == set(of_type(sam, "AWS::IAM::Role"))
    for name, role in of_type(cfn, "AWS::IAM::Role").items():
        assert not role["Properties"].get("ManagedPolicyArns"), name
    assert not of_type(cfn, "AWS::IAM::Policy") and not of_type(cfn, "AWS::IAM::ManagedPolicy")


def test_every_wildcard_in_an_iam_statement_says_why(sam: dict[str, Any], raw: list[str]) -> None:
    """A "*" in Action, or in Resource anywhere but a trailing "<prefix>/*", needs a
    "# wildcard: <reason>" comment on the statement's lines (or the line above it)."""
    checked = 0
    for where, statement in statements(sam):
        actions = [a for k in ("Action", "NotAction") for a in strings(statement.get(k, []))]
        resources = [r for k in ("Resource", "NotResource") for r in strings(statement.get(k, []))]
        wild = [a for a in actions if "*" in a] + [r for r in resources if is_wildcard_resource(r)]
        if not wild:
            continue
        checked += 1
        first, end = statement.start_mark.line, statement.end_mark.line
        lines = raw[max(first - 1, 0): max(end, first + 1)]
        assert any(WILDCARD_COMMENT.search(line) for line in lines), (
            f"{where}, statement {statement.get('Sid', '')} at line {first + 1}: {wild} needs a "
            "'# wildcard: <why>' comment"
        )
    assert checked >= 5, "the wildcard check found too few wildcards: is it still looking?"


def test_no_allow_statement_grants_every_action(sam: dict[str, Any]) -> None:
    for where, statement in statements(sam):
        if statement["Effect"] != "Allow":
            continue
        for action in strings(statement.get("Action", [])):
            if action == "*" or action.endswith(":*"):
                # Only the account root, in the key policy (KMS's default).
                assert where == "StreamcubeKey" and statement["Principal"] == {
                    "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                }, f"{where}: {action}"


def test_data_statements_name_exact_resources(sam: dict[str, Any]) -> None:
    """Outside logging, tracing and the MSK pollers' network interfaces, every Allow in a function
    role names its resources: a table, an index, a stream, a bucket prefix, a queue, the secret."""
    for name in FUNCTIONS:
        for s in role_statements(sam, name):
            if s["Sid"] in ("Tracing", "MskNetworkInterfaces"):
                continue
            for r in as_list(s["Resource"]):
                assert r != "*", f"{name}.{s['Sid']}"
                if isinstance(r, dict) and "Fn::Sub" in r:
                    template = r["Fn::Sub"] if isinstance(r["Fn::Sub"], str) else r["Fn::Sub"][0]
                    assert not is_wildcard_resource(template), f"{name}.{s['Sid']}: {template}"


# --------------------------------------------------------------------------------------------
# samconfig.toml
# --------------------------------------------------------------------------------------------
EU = set(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


def test_samconfig_environments_keep_each_country_in_its_region(sam: dict[str, Any]) -> None:
    import tomllib

    config = tomllib.loads((sam_offline.ROOT / "samconfig.toml").read_text())
    # Unnamed roles: CAPABILITY_IAM is enough.
    assert all("RoleName" not in r["Properties"] for r in of_type(sam, "AWS::IAM::Role").values())
    pattern = re.compile(sam["Parameters"]["ServedCountries"]["AllowedPattern"])
    regions = {}
    for env in ("default", "br", "eu"):
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["resolve_s3"] is True, env
        overrides = dict(o.split("=", 1) for o in deploy["parameter_overrides"])
        assert set(overrides) <= set(sam["Parameters"]), f"{env}: unknown {set(overrides) - set(sam['Parameters'])}"
        for key, value in overrides.items():
            allowed = sam["Parameters"][key].get("AllowedValues")
            assert allowed is None or value in [str(a) for a in allowed], f"{env}: {key}={value}"
        if overrides.get("Stage", sam["Parameters"]["Stage"]["Default"]) != "dev":
            assert overrides.get("JwtIssuer") and overrides.get("JwtAudience"), f"{env} needs a JWT issuer"
        countries = overrides.get("ServedCountries", "*")
        assert pattern.fullmatch(countries), env
        regions[env] = (config[env]["global"]["parameters"].get("region"), countries)
        assert config[env]["global"]["parameters"]["stack_name"], env
    assert regions["br"] == ("sa-east-1", "BR")
    assert regions["eu"][0] == "eu-west-1" and set(regions["eu"][1].split(",")) == EU
