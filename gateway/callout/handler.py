"""One auth callout request in, one signed response out: the decision pipeline.

    open (xkey) -> verify request -> envelope -> identity -> policy -> sign -> audit -> reply

Every step raises a GatewayError with a stable code; the pipeline turns any of them, and
any unexpected exception, into a deny that is audited and answered with a signed error
response (fail closed in one place). The audit record is committed before a grant is
returned; if it cannot be, the grant becomes a deny. A request whose own JWT does not
verify is audited but not answered: nothing binds a response to it, and nats-server
denies it at its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.record import AuditRecord
from gateway.audit.writer import COMMIT_BUDGET_SECONDS, DECISION_MARGIN_SECONDS
from gateway.envelope import CredentialEnvelope, parse_envelope
from gateway.errors import (
    GatewayError,
    IdentityUnavailable,
    PolicyDenied,
    RequestError,
)
from gateway.identity.model import Identity, fingerprint
from gateway.metrics import Metrics
from gateway.natsjwt.claims import (
    AuthorizationRequest,
    UserGrant,
    encode_error_response,
    encode_grant_response,
    encode_user_jwt,
    parse_authorization_request,
    verify_authorization_request,
)
from gateway.natsjwt.nkeys import CurveKeyPair, SigningKeyPair
from gateway.natsjwt.xkey import XKeyError, open_sealed, seal
from gateway.policy.cache import DecisionCache
from gateway.policy.decide import ClientConnection, Decision, decide
from gateway.policy.load import PolicySet

__all__ = ["SERVER_XKEY_HEADER", "AccountSigner", "CalloutHandler", "HandlerSettings"]

log = logging.getLogger(__name__)
SERVER_XKEY_HEADER = "Nats-Server-Xkey"
MAX_REASON = 200

IdentityVerifier = Callable[[CredentialEnvelope], Awaitable[Identity]]
# The identity of an envelope verified before and still valid, without waiting; None when
# it must be verified (again). Raises as the verifier would (an expired token).
CachedIdentity = Callable[[CredentialEnvelope], Identity | None]
# (record, deadline): the sink must commit before the deadline (epoch seconds) or refuse;
# None: no deadline (a follow-up that must be written whenever it can).
AuditSink = Callable[[AuditRecord, float | None], Awaitable[None]]


@dataclass(frozen=True, repr=False)
class AccountSigner:
    """Operator mode: a target account and the key that signs its users."""

    public_key: str
    signer: SigningKeyPair


@dataclass(frozen=True)
class HandlerSettings:
    target_account: str = "APP"
    # Config mode: the names users may be placed in (target_account included).
    # Operator mode: name -> AccountSigner; the users' JWTs are signed by that account.
    account_names: frozenset[str] = frozenset({"APP"})
    operator_accounts: Mapping[str, AccountSigner] = field(default_factory=dict)
    identity_timeout_seconds: float = 1.0
    # nats-server's auth timeout: a record committed after it could say "grant" for a
    # connection the server already refused, so the audit sink gets this deadline.
    auth_timeout_seconds: float = 2.0
    instance: str = field(default_factory=lambda: f"gw-{uuid.uuid4().hex[:8]}")


@dataclass
class _Context:
    decision_id: str
    started: float
    received_at: float
    request: AuthorizationRequest | None = None
    envelope: CredentialEnvelope | None = None
    identity: Identity | None = None
    decision: Decision | None = None
    server_xkey: str | None = None
    policy_set: PolicySet | None = None


class CalloutHandler:
    """Stateless per request; holds keys, the identity verifier, policies and audit sink."""

    def __init__(
        self, *, issuer: SigningKeyPair, xkey: CurveKeyPair | None,
        verify_identity: IdentityVerifier, policies: Callable[[], PolicySet],
        audit: AuditSink, settings: HandlerSettings,
        clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
        decisions: DecisionCache | None = None, audit_alone: AuditSink | None = None,
        cached_identity: CachedIdentity | None = None,
    ) -> None:
        self._issuer = issuer
        self._xkey = xkey
        self._verify_identity = verify_identity
        self._cached_identity = cached_identity
        self._policies = policies
        self._audit = audit
        # The sink for a decision that is the only one in flight (nothing would share its
        # commit, so the writer may commit it without a thread hand-off).
        self._audit_alone = audit_alone
        self._active = 0
        # Whether no request waits to be decided (set by the service that feeds this
        # handler): decisions run to their audit without a pause, so "only one in the
        # handler" alone does not mean nothing else is waiting.
        self.nothing_queued: Callable[[], bool] = lambda: True
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self.expired = 0  # requests that arrived after nats-server's timeout (not decisions)
        self._decide = decisions.decide if decisions is not None else decide

    async def handle(self, data: bytes, headers: Mapping[str, str] | None, *,
                     queued_seconds: float = 0.0) -> bytes | None:
        """The response bytes to send, or None when the request cannot be answered.
        ``queued_seconds``: how long it waited before this call, spent from its deadline."""
        answer = await self._answer(data, headers, queued_seconds)
        return answer.payload if answer is not None else None

    async def answer(self, data: bytes, headers: Mapping[str, str] | None,
                     send: Callable[[bytes], Awaitable[None]], *,
                     queued_seconds: float = 0.0) -> None:
        """Decide, then ``send`` the response. If sending fails after a grant was
        recorded, a follow-up record says so (``reply_failed``): nats-server refuses the
        connection at its timeout, and the log must not claim access that was not given."""
        answer = await self._answer(data, headers, queued_seconds)
        if answer is None:
            return
        try:
            await send(answer.payload)
        except Exception as exc:
            if self._metrics is not None:
                self._metrics.reply_failures.inc()
            log.error("answer to %s could not be sent: %s", answer.ctx.decision_id,
                      type(exc).__name__)
            if answer.granted:
                await self._record_reply_failure(answer.ctx, exc)

    async def _answer(self, data: bytes, headers: Mapping[str, str] | None,
                      queued_seconds: float) -> _Answer | None:
        self._active += 1
        try:
            return await self._decide_answer(data, headers, queued_seconds)
        finally:
            self._active -= 1

    def _sink(self) -> AuditSink:
        if self._active == 1 and self._audit_alone is not None and self.nothing_queued():
            return self._audit_alone
        return self._audit

    async def _decide_answer(self, data: bytes, headers: Mapping[str, str] | None,
                             queued_seconds: float) -> _Answer | None:
        ctx = _Context(decision_id=uuid.uuid4().hex, started=time.perf_counter(),
                       received_at=self._clock() - queued_seconds)
        try:
            ctx.request = self._open_and_verify(data, headers or {}, ctx)
        except _Expired:
            # nats-server already refused this connection at its auth timeout: nothing
            # to decide or record (a reconnect storm's backlog), only to count.
            self.expired += 1
            if self._metrics is not None:
                self._metrics.shed.inc()
            return None
        except RequestError as exc:
            await self._audit_deny(ctx, exc)
            return None
        except Exception as exc:  # a malformed request must never crash the service
            log.exception("unexpected error verifying request %s", ctx.decision_id)
            await self._audit_deny(ctx, RequestError(f"internal error: {type(exc).__name__}",
                                                     code="internal_error"))
            return None
        granted = False
        try:
            response = await self._decide_and_grant(ctx, ctx.request)
            granted = True
        except GatewayError as exc:
            response = await self._deny(ctx, ctx.request, exc)
        except Exception as exc:
            log.exception("unexpected error deciding %s", ctx.decision_id)
            error = GatewayError(f"internal error: {type(exc).__name__}", code="internal_error")
            response = await self._deny(ctx, ctx.request, error)
        return _Answer(self._seal(response, ctx), ctx, granted)

    def _open_and_verify(
        self, data: bytes, headers: Mapping[str, str], ctx: _Context
    ) -> AuthorizationRequest:
        parsed = parse_authorization_request(self._open(data, headers, ctx))
        # Taken only with room for the decision and then its commit (see the margin).
        if _expired_in_transit(parsed.claims, self._clock(),
                               COMMIT_BUDGET_SECONDS + DECISION_MARGIN_SECONDS):
            raise _Expired
        request = verify_authorization_request(
            parsed, expected_subject=self._issuer.public_key, now=int(self._clock()))
        if self._xkey is not None and request.server.xkey != ctx.server_xkey:
            # nats-server's own tests check this: an outer header that disagrees with the
            # signed claim means the envelope was tampered with or replayed.
            raise RequestError("xkey header does not match the signed server xkey",
                               code="xkey_mismatch")
        return request

    def _open(self, data: bytes, headers: Mapping[str, str], ctx: _Context) -> str:
        if self._xkey is None:
            return data.decode("utf-8", errors="replace")
        server_xkey = headers.get(SERVER_XKEY_HEADER)
        if not server_xkey:
            raise RequestError("request is not encrypted but xkey is configured",
                               code="xkey_required")
        ctx.server_xkey = server_xkey
        try:
            return open_sealed(data, self._xkey, server_xkey).decode("utf-8", errors="replace")
        except XKeyError as exc:
            raise RequestError(f"cannot open encrypted request: {exc}",
                               code="xkey_open_failed") from exc

    def _step(self, name: str, started: float) -> float:
        now = time.perf_counter()
        if self._metrics is not None:
            self._metrics.step(name).observe(now - started)
        return now

    def _count(self, result: str, method: str, reason: str, ctx: _Context) -> None:
        if self._metrics is not None:
            self._metrics.decision(result, method or "none", reason).inc()
            self._step("total", ctx.started)

    async def _decide_and_grant(self, ctx: _Context, request: AuthorizationRequest) -> str:
        now = int(self._clock())
        ctx.envelope = parse_envelope(request.connect.auth_token)
        mark = time.perf_counter()
        ctx.identity = await self._identity(ctx.envelope)
        mark = self._step("identity", mark)
        # One set per decision: a reload mid-request must not mix two sets in one record.
        ctx.policy_set = self._policies()
        client = ClientConnection.from_client_info(
            request.client.host, request.client.kind, request.client.type)
        ctx.decision = self._decide(ctx.policy_set, ctx.identity, ctx.envelope.scope, client,
                                    now)
        mark = self._step("policy", mark)
        grant, signer = self._grant(request, ctx)
        # Signed before the record is queued: a record says "grant" only for an answer
        # that exists (measured: signing during the commit only adds GIL hand-offs).
        response = self._sign_grant(request, grant, signer, now)
        mark = self._step("sign", mark)
        await self._sink()(self._record(ctx, "grant", "granted", "granted"),
                           self._deadline(ctx))
        self._step("audit", mark)
        self._count("grant", ctx.envelope.method, "granted", ctx)
        if log.isEnabledFor(logging.INFO):  # the fields cost a dict per connection
            log.info("grant %s", ctx.decision_id, extra={"decision": self._log_fields(ctx)})
        return response

    def _sign_grant(self, request: AuthorizationRequest, grant: UserGrant,
                    signer: SigningKeyPair, now: int) -> str:
        user_jwt = encode_user_jwt(grant, signer, now=now)
        return encode_grant_response(
            user_nkey=request.user_nkey, server_id=request.server.id, user_jwt=user_jwt,
            signer=self._issuer, now=now)

    def _log_fields(self, ctx: _Context, error: GatewayError | None = None) -> dict[str, Any]:
        """One structured line per decision: ids and codes, never credentials."""
        scope = ctx.envelope.scope if ctx.envelope else None
        return {
            "decision_id": ctx.decision_id,
            "result": "deny" if error else "grant",
            "reason_code": error.code if error else "granted",
            "method": ctx.envelope.method if ctx.envelope else "",
            "principal": ctx.identity.principal if ctx.identity else "",
            "dag_id": scope.dag_id if scope else "", "task_id": scope.task_id if scope else "",
            "client_host": ctx.request.client.host if ctx.request else "",
            "policy_ids": list(ctx.decision.policy_ids) if ctx.decision else [],
            "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
        }

    async def _identity(self, envelope: CredentialEnvelope) -> Identity:
        if self._cached_identity is not None:
            # A token verified before needs no wait, so no timer either.
            identity = self._cached_identity(envelope)
            if identity is not None:
                return identity
        try:
            # asyncio.timeout runs the verifier in this task (wait_for would start another).
            async with asyncio.timeout(self._settings.identity_timeout_seconds):
                return await self._verify_identity(envelope)
        except TimeoutError as exc:
            raise IdentityUnavailable("identity provider did not answer in time",
                                      code="identity_timeout") from exc

    def _grant(self, request: AuthorizationRequest,
               ctx: _Context) -> tuple[UserGrant, SigningKeyPair]:
        """The user JWT's content and its signer, in the account the policy chose."""
        assert ctx.envelope is not None and ctx.decision is not None
        scope = ctx.envelope.scope
        name = ctx.decision.account or self._settings.target_account
        settings = self._settings
        account, signer, issuer_account = name, self._issuer, None
        if settings.operator_accounts:
            target = settings.operator_accounts.get(name)
            if target is None:
                raise PolicyDenied(f"policy account `{name}` is not configured",
                                   code="account_not_configured")
            account, signer = target.public_key, target.signer
            if signer.public_key != target.public_key:
                issuer_account = target.public_key
        elif name not in settings.account_names:
            raise PolicyDenied(f"policy account `{name}` is not configured",
                               code="account_not_configured")
        grant = UserGrant(
            user_nkey=request.user_nkey, account=account,
            name=f"{scope.dag_id}/{scope.task_id}", permissions=ctx.decision.permissions,
            expires=ctx.decision.expires, issuer_account=issuer_account,
        )
        return grant, signer

    async def _deny(self, ctx: _Context, request: AuthorizationRequest,
                    error: GatewayError) -> str:
        ctx.decision = None
        await self._audit_deny(ctx, error)
        return encode_error_response(
            user_nkey=request.user_nkey, server_id=request.server.id,
            error=_reason(error), signer=self._issuer, now=int(self._clock()))

    async def _audit_deny(self, ctx: _Context, error: GatewayError) -> None:
        """Log, count and record a deny. Never raises: whatever fails here, the request
        is still answered with its signed error (a deny gives nothing away)."""
        try:
            if log.isEnabledFor(logging.INFO):
                log.info("deny %s %s", ctx.decision_id, _reason(error),
                         extra={"decision": self._log_fields(ctx, error)})
            self._count("deny", ctx.envelope.method if ctx.envelope else "", error.code, ctx)
            record = self._record(ctx, "deny", error.code, error.description)
        except Exception:
            log.exception("deny %s: building its record failed", ctx.decision_id)
            record = self._minimal_record(ctx, "deny", error.code)
        await self._write_deny(ctx, record)

    async def _write_deny(self, ctx: _Context, record: AuditRecord) -> None:
        try:
            await self._sink()(record, self._deadline(ctx))
        except Exception as exc:
            # Still a deny: nothing is granted. The writer keeps a deny that misses its
            # deadline (written late); this is a store that could not commit at all.
            if self._metrics is not None:
                self._metrics.unrecorded.inc()
            description = exc.description if isinstance(exc, GatewayError) else type(
                exc).__name__
            log.error("deny %s could not be audited: %s", ctx.decision_id, description)

    async def _record_reply_failure(self, ctx: _Context, exc: Exception) -> None:
        """The follow-up to a recorded grant whose answer never left: a deny-side record
        naming the grant, so a reader of the log sees the access was not given."""
        follow_up = _Context(decision_id=uuid.uuid4().hex, started=time.perf_counter(),
                             received_at=self._clock(), request=ctx.request,
                             envelope=ctx.envelope, identity=ctx.identity,
                             server_xkey=ctx.server_xkey, policy_set=ctx.policy_set)
        reason = (f"grant {ctx.decision_id} was recorded but its answer could not be sent "
                  f"({type(exc).__name__}); nats-server refused the connection")
        try:
            record = self._record(follow_up, "deny", "reply_failed", reason)
            await self._audit(record, None)  # no deadline: it must be written
        except Exception:
            if self._metrics is not None:
                self._metrics.unrecorded.inc()
            log.exception("reply_failed record for grant %s could not be written",
                          ctx.decision_id)

    def _deadline(self, ctx: _Context) -> float:
        local = ctx.received_at + self._settings.auth_timeout_seconds
        if ctx.request is None:
            return local
        # nats-server gives up by exp + 1 at the latest (exp counts from its send time in
        # whole seconds): a request that sat in buffers before we saw it has less left.
        return min(local, ctx.request.expires + 1)

    def _seal(self, response: str, ctx: _Context) -> bytes:
        if self._xkey is None or ctx.server_xkey is None:
            return response.encode()
        return seal(response.encode(), self._xkey, ctx.server_xkey)

    def _record(self, ctx: _Context, decision: str, code: str, reason: str) -> AuditRecord:
        request, envelope, identity = ctx.request, ctx.envelope, ctx.identity
        granted = ctx.decision if decision == "grant" else None
        scope = envelope.scope if envelope else None
        return AuditRecord(
            decision_id=ctx.decision_id, decided_at=self._clock(), decision=decision,
            reason_code=code, reason=reason[:MAX_REASON],
            gateway_instance=self._settings.instance,
            latency_ms=(time.perf_counter() - ctx.started) * 1000,
            method=envelope.method if envelope else "",
            principal=identity.principal if identity else "",
            identity_fingerprint=_credential_fingerprint(request),
            dag_id=scope.dag_id if scope else "", task_id=scope.task_id if scope else "",
            run_id=(scope.run_id or "") if scope else "",
            client_host=request.client.host if request else "",
            client_id=request.client.id if request else 0,
            client_name=request.connect.name if request else "",
            client_lang=request.connect.lang if request else "",
            client_version=request.connect.version if request else "",
            server_id=request.server.id if request else "",
            server_name=request.server.name if request else "",
            user_nkey=request.user_nkey if request else "",
            permissions=granted.permissions.as_dict() if granted else {},
            expires_at=granted.expires if granted else None,
            policy_ids=granted.policy_ids if granted else (),
            policy_set_hash=self._policy_hash(ctx),
        )

    def _minimal_record(self, ctx: _Context, decision: str, code: str) -> AuditRecord:
        """A record of only the fields that cannot fail: ids, time, the reason code and
        the fingerprints."""
        request = ctx.request
        return AuditRecord(
            decision_id=ctx.decision_id, decided_at=self._clock(), decision=decision,
            reason_code=code, reason="record reduced to its safe fields",
            gateway_instance=self._settings.instance,
            latency_ms=(time.perf_counter() - ctx.started) * 1000,
            identity_fingerprint=_credential_fingerprint(request),
            user_nkey=request.user_nkey if request else "",
            server_id=request.server.id if request else "")

    def _policy_hash(self, ctx: _Context) -> str:
        if ctx.policy_set is not None:
            return ctx.policy_set.content_hash
        try:
            return self._policies().content_hash
        except Exception:  # the hash is informational; never let it block a record
            return ""


@dataclass(frozen=True)
class _Answer:
    payload: bytes
    ctx: _Context
    granted: bool


class _Expired(Exception):
    """The request outlived nats-server's auth timeout before we could look at it."""


def _expired_in_transit(claims: Mapping[str, Any], now: float, budget: float) -> bool:
    """Whether the request certainly has less than ``budget`` seconds left before
    nats-server gives up on it (by ``exp + 1`` at the latest: ``exp`` is its send time in
    whole seconds plus its auth timeout), so its record would be refused as too late
    anyway. Read before the signature is checked, so it can only ever drop a request,
    never let one through: an unusable ``exp`` goes on to the full verification, which
    refuses it properly."""
    exp = claims.get("exp")
    return isinstance(exp, int) and not isinstance(exp, bool) and exp + 1 - now < budget


def _credential_fingerprint(request: AuthorizationRequest | None) -> str:
    # Of the whole auth_token, so a refused credential can still be correlated later.
    if request is None or not request.connect.auth_token:
        return ""
    return fingerprint(request.connect.auth_token)


def _reason(error: GatewayError) -> str:
    return f"{error.code}: {error.description}"[:MAX_REASON]
