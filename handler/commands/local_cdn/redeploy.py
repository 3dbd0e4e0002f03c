"""``local-cdn`` redeploys in place on SIGHUP: a new synthesized template applied as ``cdk deploy``
would, the edge cache and buckets kept (what it does: docs/local-cdn.md, "Redeploys in place").
Uploads run before the function changes, as a deploy's assets are in place before its function;
a change to behaviours, policies, origins or CloudFront Functions is logged, not applied.

Invalidation paths match as CloudFront's do (the cached request's URI and query string, ``*`` only
at the end matching any rest); the cache keys on the query pairs whatever their order, so a path
matches an entry whose query it matches in any order."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.commands.local_cdn.cache import CacheKey
from handler.commands.local_cdn.edge import Edge
from handler.commands.local_cdn.http import format_query
from handler.commands.local_cdn.intrinsics import Names, Resolver, Unsupported
from handler.commands.local_cdn.lambda_url import LambdaUrlFetcher
from handler.commands.local_cdn.template import (
    Deployment,
    Distribution,
    LambdaUrlOrigin,
    read_template,
    stack_name,
)

log = logging.getLogger("local_cdn")

MAX_ORDERS = 720  # query pairs tried in every order up to 6 of them; beyond, as cached
Paths = tuple[str, ...]


@dataclass(frozen=True)
class DeployInvalidation:
    """A custom resource that invalidates paths of a distribution when CloudFormation runs it."""

    logical_id: str
    distribution_id: str
    properties: str  # resolved, for telling an update from an unchanged resource
    create: Paths | None  # the paths of its Create call, if it has one
    update: Paths | None


def _normalised(name: str) -> str:
    """``CloudFront``, ``@aws-sdk/client-cloudfront`` -> ``cloudfront``; ``createInvalidation``,
    ``CreateInvalidationCommand`` -> ``createinvalidation``."""
    return name.lower().removeprefix("@aws-sdk/client-").removesuffix("command")


def _invalidation_call(text: str) -> tuple[str, Paths] | None:
    """The distribution and paths of an AwsCustomResource call, if it is a CreateInvalidation."""
    call = json.loads(text)
    if _normalised(str(call.get("service", ""))) != "cloudfront":
        return None
    if _normalised(str(call.get("action", ""))) != "createinvalidation":
        return None
    parameters = call.get("parameters") or {}
    items = ((parameters.get("InvalidationBatch") or {}).get("Paths") or {}).get("Items") or []
    return str(parameters.get("DistributionId", "")), tuple(str(path) for path in items)


def deploy_invalidations(
    template: Mapping[str, Any], names: Names, notes: list[str] | None = None
) -> dict[str, DeployInvalidation]:
    """The template's invalidating custom resources, by logical id."""
    resolver = Resolver(template, names)
    found: dict[str, DeployInvalidation] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "Custom::AWS":
            continue
        props = {k: v for k, v in (resource.get("Properties") or {}).items() if k != "ServiceToken"}
        try:
            calls = {
                key: _invalidation_call(resolver.text(props[key], f"{logical_id}.{key}"))
                for key in ("Create", "Update")
                if key in props
            }
            resolved = json.dumps(resolver.resolve(props, logical_id), sort_keys=True)
        except (Unsupported, ValueError) as exc:
            if notes is not None:
                notes.append(f"{logical_id}: not run on redeploy ({exc})")
            continue
        targets = {call[0] for call in calls.values() if call is not None}
        if not targets:
            continue
        create, update = calls.get("Create"), calls.get("Update")
        found[logical_id] = DeployInvalidation(
            logical_id,
            targets.pop(),
            resolved,
            create[1] if create else None,
            update[1] if update else None,
        )
    return found


def planned(
    before: Mapping[str, DeployInvalidation], after: Mapping[str, DeployInvalidation]
) -> list[tuple[DeployInvalidation, Paths, str]]:
    """What CloudFormation would call going from ``before`` to ``after``: (resource, paths,
    ``created`` or ``updated``)."""
    calls: list[tuple[DeployInvalidation, Paths, str]] = []
    for logical_id, resource in after.items():
        old = before.get(logical_id)
        if old is None and resource.create:
            calls.append((resource, resource.create, "created"))
        elif old is not None and old.properties != resource.properties and resource.update:
            calls.append((resource, resource.update, "updated"))
    return calls


def _renderings(uri: str, query: Sequence[tuple[str, str]]) -> Iterator[str]:
    if not query:
        yield uri
        return
    orders = itertools.islice(itertools.permutations(query), MAX_ORDERS)
    for order in orders:
        yield f"{uri}?{format_query(list(order))}"


def path_matches(path: str, key: CacheKey) -> bool:
    """Whether an invalidation path names the cached request of ``key``."""
    uri, query = str(key[1]), key[2]
    assert isinstance(query, tuple)  # cache.cache_key's (name, value) pairs
    if path.endswith("*"):
        return any(shown.startswith(path[:-1]) for shown in _renderings(uri, query))
    return any(shown == path for shown in _renderings(uri, query))


def invalidate(edge: Edge, paths: Paths) -> int:
    """Remove the edge cache's entries these paths name; how many."""
    return edge.cache.invalidate(lambda key: any(path_matches(path, key) for path in paths))


def _comparable(distribution: Distribution) -> tuple[Any, ...]:
    """What the edge serves, less what a redeploy applies in place (the function's settings,
    the deployments)."""
    behaviours = []
    for behaviour in distribution.behaviours:
        origin = behaviour.origin
        if isinstance(origin, LambdaUrlOrigin):
            function = dataclasses.replace(origin.function, environment={}, timeout=0, memory_mib=0)
            behaviour = dataclasses.replace(
                behaviour, origin=dataclasses.replace(origin, function=function)
            )
        behaviours.append(behaviour)
    return (
        tuple(behaviours),
        distribution.buckets,
        dict(distribution.error_caching_min_ttl),
        distribution.default_root_object,
    )


@dataclass(frozen=True)
class _Prepared:
    distribution: Distribution
    template: dict[str, Any]
    invalidations: dict[str, DeployInvalidation]
    environment: dict[str, str]
    uploaded: int
    notes: tuple[str, ...]


class Redeployer:
    """Applies the template at ``template_path`` again to a running local-cdn (the module's
    docstring). ``environment_of`` gives the function's environment for a distribution (the
    template's, with ``--app-origin`` and ``--env-file`` applied); ``upload`` runs deployments
    (and ``--seed-public``) and returns how many files it uploaded."""

    def __init__(
        self,
        template_path: Path,
        region: str,
        edge: Edge,
        environment: Mapping[str, str],
        environment_of: Callable[[Distribution], dict[str, str]],
        upload: Callable[[Distribution, Sequence[Deployment]], int],
    ) -> None:
        self.template_path = template_path
        self.region = region
        self.edge = edge
        self.redeploys = 0
        self._environment = dict(environment)
        self._environment_of = environment_of
        self._upload = upload
        self._template = self._read()
        self._invalidations = deploy_invalidations(self._template, self._names())
        self._lock = asyncio.Lock()

    def _names(self) -> Names:
        return Names(stack_name(self.template_path), self.region)

    def _read(self) -> dict[str, Any]:
        template: dict[str, Any] = json.loads(self.template_path.read_text())
        return template

    async def redeploy(self) -> bool:
        """One redeploy (serialised with any other); False if the template was refused, and
        the previous deploy keeps serving."""
        async with self._lock:
            try:
                prepared = await asyncio.to_thread(self._prepare)
            except (Unsupported, OSError, ValueError) as exc:
                log.error(
                    "redeploy of %s refused; still serving the previous deploy: %s",
                    self.template_path,
                    exc,
                )
                return False
            self._apply(prepared)
            return True

    def _prepare(self) -> _Prepared:
        """The blocking part: the template read, the assets uploaded."""
        template = self._read()
        distribution = read_template(self.template_path, self.region)
        notes: list[str] = []
        invalidations = deploy_invalidations(template, self._names(), notes)
        before = set(self.edge.distribution.deployments)
        changed = [d for d in distribution.deployments if d not in before]
        environment = self._environment_of(distribution)
        uploaded = self._upload(distribution, changed)
        return _Prepared(distribution, template, invalidations, environment, uploaded, tuple(notes))

    def _apply(self, prepared: _Prepared) -> None:
        """On the serving loop: the function's new settings, then the invalidations."""
        for note in prepared.notes:
            log.warning("note: %s", note)
        changed = sorted(
            key
            for key in set(self._environment) | set(prepared.environment)
            if self._environment.get(key) != prepared.environment.get(key)
        )
        for key in changed:
            was = self._environment.get(key)
            if key in prepared.environment:
                os.environ[key] = prepared.environment[key]
                log.info("%s=%s (was %s)", key, prepared.environment[key], was)
            else:
                os.environ.pop(key, None)
                log.info("%s unset (was %s)", key, was)
        self._environment = dict(prepared.environment)
        retired = 0
        new_function = prepared.distribution.lambda_function
        for fetcher in self.edge.fetchers.values():
            if isinstance(fetcher, LambdaUrlFetcher) and new_function is not None:
                origin = fetcher.origin
                retired += fetcher.redeploy(dataclasses.replace(origin, function=new_function))
        if _comparable(prepared.distribution) == _comparable(self.edge.distribution):
            self.edge.distribution = prepared.distribution
        else:
            log.warning(
                "the distribution's behaviours, policies, origins or functions changed: not "
                "applied in place (restart local-cdn to serve them); the uploads, the function's "
                "environment and the invalidations were"
            )
        removed, paths = 0, 0
        own = self.edge.distribution.logical_id
        for resource, resource_paths, how in planned(self._invalidations, prepared.invalidations):
            if resource.distribution_id != own:
                log.warning(
                    "%s invalidates %s, not %s: not run",
                    resource.logical_id,
                    resource.distribution_id,
                    own,
                )
                continue
            count = invalidate(self.edge, resource_paths)
            log.info(
                "%s (%s): invalidated %s: %d cached answers",
                resource.logical_id,
                how,
                ", ".join(resource_paths),
                count,
            )
            removed += count
            paths += len(resource_paths)
        self._template = prepared.template
        self._invalidations = prepared.invalidations
        self.redeploys += 1
        log.info(
            "redeployed %s (#%d): %d files uploaded, %d environment variables changed (%s), "
            "%d idle function instances retired, %d invalidation paths removed %d cached answers",
            self.template_path,
            self.redeploys,
            prepared.uploaded,
            len(changed),
            ", ".join(changed) or "none",
            retired,
            paths,
            removed,
        )
