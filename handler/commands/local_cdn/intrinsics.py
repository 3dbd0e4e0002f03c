"""CloudFormation intrinsic functions, resolved to the names local-cdn gives the stack's resources.

Only what a synthesized CDK template needs to describe a distribution: ``Ref``, ``Fn::GetAtt``,
``Fn::Join``, ``Fn::Sub``, ``Fn::Select``, ``Fn::Split`` and the pseudo parameters. Anything else
(conditions, imports, attributes of other resource types) raises ``Unsupported`` naming where it
was found, rather than being guessed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# moto's default account, so ARNs agree with the buckets moto creates.
ACCOUNT = "123456789012"
LAMBDA_URL_SUFFIX = "lambda-url.{region}.on.aws"
_SUB = re.compile(r"\$\{([^}]*)\}")


class Unsupported(Exception):
    """Something in the template local-cdn cannot emulate faithfully; the message names it."""


@dataclass(frozen=True)
class Names:
    """Physical names for a stack's resources, shaped like the ones CloudFormation generates."""

    stack: str
    region: str = "us-east-1"
    account: str = ACCOUNT

    def bucket(self, logical_id: str) -> str:
        """``<stack>-<logical id>`` in S3's alphabet (CloudFormation adds a random suffix)."""
        name = re.sub(r"[^a-z0-9-]", "", f"{self.stack}-{logical_id}".lower())
        return name[:63].strip("-")

    def function(self, logical_id: str) -> str:
        return f"{self.stack}-{logical_id}"[:64]

    def lambda_url_host(self, logical_id: str) -> str:
        """A Function URL host: 32 characters of id, then the regional suffix."""
        url_id = hashlib.sha256(f"{self.stack}/{logical_id}".encode()).hexdigest()[:32]
        return f"{url_id}.{LAMBDA_URL_SUFFIX.format(region=self.region)}"


class Resolver:
    """Turns template values into strings; ``where`` says which property, for error messages."""

    def __init__(self, template: Mapping[str, Any], names: Names) -> None:
        self.resources: Mapping[str, Any] = template.get("Resources", {})
        self.parameters: Mapping[str, Any] = template.get("Parameters", {})
        self.names = names

    def resolve(self, value: Any, where: str) -> Any:
        """Lists and objects are resolved member by member; intrinsics become strings."""
        if isinstance(value, list):
            return [self.resolve(item, where) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref":
                return self.ref(argument, where)
            if key.startswith("Fn::"):
                return self._function(key, argument, where)
        return {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}

    def text(self, value: Any, where: str) -> str:
        resolved = self.resolve(value, where)
        if not isinstance(resolved, str | int | float) or isinstance(resolved, bool):
            raise Unsupported(f"{where}: expected a string, got {resolved!r}")
        return str(resolved)

    def resource(self, logical_id: str, where: str) -> Mapping[str, Any]:
        found = self.resources.get(logical_id)
        if not isinstance(found, Mapping):
            raise Unsupported(f"{where}: no resource {logical_id!r} in the template")
        return found

    def ref(self, name: str, where: str) -> str:
        pseudo = {
            "AWS::Region": self.names.region,
            "AWS::AccountId": self.names.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.names.stack,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            default = self.parameters[name].get("Default")
            if default is None:
                raise Unsupported(f"{where}: parameter {name} has no default value")
            return str(default)
        resource = self.resource(name, where)
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            explicit = props.get("BucketName")
            return (
                self.text(explicit, f"{name}.BucketName") if explicit else self.names.bucket(name)
            )
        if kind == "AWS::Lambda::Function":
            explicit = props.get("FunctionName")
            if explicit:
                return self.text(explicit, f"{name}.FunctionName")
            return self.names.function(name)
        if kind == "AWS::Lambda::Alias":
            function = self.text(props.get("FunctionName"), f"{name}.FunctionName")
            return f"{self._function_arn(function)}:{props.get('Name')}"
        return name

    def _function_arn(self, function_name: str) -> str:
        if function_name.startswith("arn:"):
            return function_name
        names = self.names
        return f"arn:aws:lambda:{names.region}:{names.account}:function:{function_name}"

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        resource = self.resource(logical_id, where)
        kind = resource.get("Type")
        region = self.names.region
        if kind == "AWS::S3::Bucket":
            bucket = self.ref(logical_id, where)
            attributes = {
                "Arn": f"arn:aws:s3:::{bucket}",
                "DomainName": f"{bucket}.s3.amazonaws.com",
                "RegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
            }
        elif kind == "AWS::Lambda::Function":
            attributes = {"Arn": self._function_arn(self.ref(logical_id, where))}
        elif kind == "AWS::Lambda::Url":
            props = resource.get("Properties", {})
            target = self.text(props.get("TargetFunctionArn"), f"{logical_id}.TargetFunctionArn")
            attributes = {
                "FunctionUrl": f"https://{self.names.lambda_url_host(logical_id)}/",
                "FunctionArn": target,
            }
        elif kind == "AWS::Lambda::Version":
            attributes = {"Version": "1"}
        elif kind == "AWS::CloudFront::Function":
            arn = f"arn:aws:cloudfront::{self.names.account}:function/{logical_id}"
            attributes = {"FunctionARN": arn, "FunctionMetadata.FunctionARN": arn}
        elif kind in (
            "AWS::CloudFront::OriginAccessControl",
            "AWS::CloudFront::CachePolicy",
            "AWS::CloudFront::OriginRequestPolicy",
            "AWS::CloudFront::ResponseHeadersPolicy",
        ):
            attributes = {"Id": logical_id}
        else:
            attributes = {}
        if attribute not in attributes:
            raise Unsupported(f"{where}: Fn::GetAtt {logical_id}.{attribute} ({kind})")
        return attributes[attribute]

    def _function(self, key: str, argument: Any, where: str) -> Any:
        if key == "Fn::GetAtt":
            logical_id, attribute = (
                argument.split(".", 1) if isinstance(argument, str) else argument
            )
            return self.get_att(logical_id, self.text(attribute, where), where)
        if key == "Fn::Join":
            separator, items = argument
            return separator.join(self.text(item, where) for item in self.resolve(items, where))
        if key == "Fn::Select":
            index, items = argument
            return self.resolve(items, where)[int(self.text(index, where))]
        if key == "Fn::Split":
            separator, text = argument
            return self.text(text, where).split(separator)
        if key == "Fn::Sub":
            return self._sub(argument, where)
        raise Unsupported(f"{where}: {key} is not resolved by local-cdn")

    def _sub(self, argument: Any, where: str) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return self.text(variables[name], where)
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute, where)
            return self.ref(name, where)

        return _SUB.sub(replace, text)
