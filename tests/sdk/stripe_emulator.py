"""Stripe's official Python SDK against the payhost Stripe emulator.

Run by `.ci/stripe-sdk`: `python stripe_emulator.py http://127.0.0.1:<port>`.
Everything that talks to the emulator's API goes through the SDK's public
interface (`stripe.StripeClient`, and the module-level API for one call);
only the emulator's own control endpoints (`/_emulator/…`, its fake 3-D
Secure page), which Stripe does not have, are called with `urllib`. Webhook
deliveries go to a receiver this program runs on loopback and are verified
with `stripe.Webhook.construct_event`, the SDK's own signature check.

Each check prints `ok` or `FAIL` with what differed; the closing line is
`stripe-sdk: N passed, N failed` and the exit status is 1 on any failure.
"""

import http.client
import http.server
import json
import secrets
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request

import stripe

# Deliveries are asynchronous: how long a check waits for one before failing.
DELIVERY_DEADLINE_S = 15.0

# Event types the real Stripe API sends that these checks may see.
STRIPE_EVENT_TYPES = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.requires_action",
    "payment_intent.canceled",
    "payment_intent.amount_capturable_updated",
    "charge.refunded",
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
}


class CheckFailed(AssertionError):
    """A difference between what the SDK got and what Stripe documents."""


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def expect_raises(error_type, call, what):
    """Runs `call`; returns the `error_type` it raised, fails otherwise."""
    try:
        result = call()
    except error_type as e:
        return e
    except stripe.StripeError as e:
        raise CheckFailed(
            f"{what}: expected {error_type.__name__}, got {type(e).__name__} "
            f"(HTTP {e.http_status}): {e.user_message or e}"
        ) from e
    raise CheckFailed(f"{what}: expected {error_type.__name__}, got {result!r}")


class Receiver:
    """A loopback webhook endpoint: records every POST (path, headers, raw
    body) and answers 200. `wait_for` polls the record with a deadline."""

    def __init__(self):
        self._lock = threading.Condition()
        self._deliveries = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver._deliveries.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    receiver._lock.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def deliveries(self, path):
        with self._lock:
            return [d for d in self._deliveries if d["path"] == path]

    def wait_for(self, path, predicate, what):
        """The first delivery to `path` for which `predicate(delivery)` is
        true, waiting up to DELIVERY_DEADLINE_S for it to arrive."""
        deadline = time.monotonic() + DELIVERY_DEADLINE_S
        with self._lock:
            while True:
                for d in self._deliveries:
                    if d["path"] == path and predicate(d):
                        return d
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [
                        json.loads(d["body"]).get("type")
                        for d in self._deliveries
                        if d["path"] == path
                    ]
                    raise CheckFailed(
                        f"no webhook delivery {what} within {DELIVERY_DEADLINE_S:.0f} s "
                        f"(delivered to {path}: {seen})"
                    )
                self._lock.wait(remaining)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


def raw_event(delivery):
    return json.loads(delivery["body"])


def about(kind, object_id):
    """A predicate: the delivery is an event of type `kind` about `object_id`."""

    def matches(delivery):
        event = raw_event(delivery)
        return event.get("type") == kind and event["data"]["object"].get("id") == object_id

    return matches


class Checks:
    def __init__(self, base):
        self.base = base.rstrip("/")
        # A fresh account: the emulator keeps one per API key.
        self.api_key = "sk_test_sdk_" + secrets.token_hex(12)
        self.client = stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.base},
            # Failures must show as they are, not after the SDK's retries.
            max_network_retries=0,
        )
        self.receiver = Receiver()
        self.hook_path = "/hooks/all"
        self.refund_hook_path = "/hooks/refund-created"
        self.endpoint = None
        self.refund_endpoint = None

    # -- helpers -----------------------------------------------------------

    def pay(self, amount, payment_method="pm_card_visa", **extra):
        return self.client.v1.payment_intents.create(
            {
                "amount": amount,
                "currency": "usd",
                "confirm": True,
                "payment_method": payment_method,
                **extra,
            }
        )

    def verified(self, delivery, secret):
        """The delivery checked with the SDK's own signature verification."""
        signature = delivery["headers"].get("stripe-signature")
        expect(signature is not None, "delivery carries no Stripe-Signature header")
        try:
            event = stripe.Webhook.construct_event(delivery["body"], signature, secret)
        except stripe.SignatureVerificationError as e:
            raise CheckFailed(f"Stripe-Signature does not verify: {e}") from e
        expect(
            event.type in STRIPE_EVENT_TYPES,
            f"event type {event.type!r} is not one Stripe sends",
        )
        expect(event.id.startswith("evt_"), f"event id {event.id!r} is not evt_…")
        expect_eq(event.object, "event", "event.object")
        return event

    def control(self, path, form=None):
        """POSTs to an emulator-only control endpoint (not Stripe's API)."""
        data = urllib.parse.urlencode(form or {}).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    # -- checks ------------------------------------------------------------

    def balance(self):
        balance = self.client.v1.balance.retrieve()
        expect_eq(balance.object, "balance", "balance.object")
        expect(len(balance.available) >= 1, "balance.available is empty")
        expect_eq(balance.available[0].currency, "usd", "balance.available[0].currency")
        # The module-level API, pointed at the emulator the documented way.
        stripe.api_key = self.api_key
        stripe.api_base = self.base
        stripe.max_network_retries = 0
        expect_eq(stripe.Balance.retrieve().object, "balance", "stripe.Balance.retrieve().object")

    def webhook_endpoint_create(self):
        # Both endpoints exist before anything is asserted: later checks
        # need them even when this one fails.
        self.endpoint = self.client.v1.webhook_endpoints.create(
            {
                "url": self.receiver.url(self.hook_path),
                "enabled_events": ["*"],
                "description": "stripe-sdk check",
                "metadata": {"suite": "sdk"},
            }
        )
        self.refund_endpoint = self.client.v1.webhook_endpoints.create(
            {
                "url": self.receiver.url(self.refund_hook_path),
                "enabled_events": ["refund.created"],
            }
        )
        for endpoint in (self.endpoint, self.refund_endpoint):
            expect(endpoint.id.startswith("we_"), f"endpoint id {endpoint.id!r}")
            secret = getattr(endpoint, "secret", None)
            expect(
                isinstance(secret, str) and secret.startswith("whsec_"),
                f"created endpoint's secret is {secret!r}, not whsec_…",
            )
            expect_eq(endpoint.status, "enabled", "endpoint.status")
        expect(
            self.refund_endpoint.secret != self.endpoint.secret,
            "two endpoints share one signing secret",
        )
        expect_eq(self.endpoint.url, self.receiver.url(self.hook_path), "endpoint.url")
        expect_eq(list(self.endpoint.enabled_events), ["*"], "endpoint.enabled_events")
        expect_eq(
            list(self.refund_endpoint.enabled_events), ["refund.created"], "enabled_events"
        )
        expect_eq(self.endpoint.description, "stripe-sdk check", "endpoint.description")
        expect_eq(self.endpoint.metadata.to_dict(), {"suite": "sdk"}, "endpoint.metadata")

    def webhook_endpoint_list_and_retrieve(self):
        listed = self.client.v1.webhook_endpoints.list()
        expect_eq(listed.object, "list", "list.object")
        ids = [e.id for e in listed.data]
        expect(
            self.endpoint.id in ids and self.refund_endpoint.id in ids,
            f"list is missing the created endpoints: {ids}",
        )
        for e in listed.data:
            expect("secret" not in e, f"list shows the secret of {e.id}")
        retrieved = self.client.v1.webhook_endpoints.retrieve(self.endpoint.id)
        expect_eq(retrieved.id, self.endpoint.id, "retrieved endpoint id")
        expect_eq(retrieved.url, self.endpoint.url, "retrieved endpoint url")
        expect_eq(retrieved.metadata.to_dict(), {"suite": "sdk"}, "retrieved endpoint metadata")
        expect("secret" not in retrieved, "retrieve shows the endpoint's secret")

    def webhook_endpoint_pagination(self):
        # A third endpoint for an event type the checks never cause.
        spare = self.client.v1.webhook_endpoints.create(
            {"url": self.receiver.url("/hooks/spare"), "enabled_events": ["charge.dispute.created"]}
        )
        try:
            page = self.client.v1.webhook_endpoints.list({"limit": 1})
            expect_eq(len(page.data), 1, "len(list(limit=1).data)")
            expect_eq(page.has_more, True, "list(limit=1).has_more with 3 endpoints")
            after = self.client.v1.webhook_endpoints.list(
                {"limit": 1, "starting_after": page.data[0].id}
            )
            expect_eq(len(after.data), 1, "len(list(limit=1, starting_after).data)")
            expect(after.data[0].id != page.data[0].id, "starting_after returned the same endpoint")
            walked = [e.id for e in page.auto_paging_iter()]
            expect_eq(len(walked), 3, f"auto_paging_iter over limit=1 pages ({walked})")
            expect_eq(len(set(walked)), 3, f"auto_paging_iter repeats an endpoint ({walked})")
            expect(
                {self.endpoint.id, self.refund_endpoint.id, spare.id} == set(walked),
                f"auto_paging_iter missed an endpoint ({walked})",
            )
            before = self.client.v1.webhook_endpoints.list(
                {"limit": 2, "ending_before": walked[-1]}
            )
            expect_eq([e.id for e in before.data], walked[:2], "list(ending_before=last)")
            error = expect_raises(
                stripe.InvalidRequestError,
                lambda: self.client.v1.webhook_endpoints.list({"limit": 101}),
                "list(limit=101)",
            )
            expect_eq(error.param, "limit", "limit=101 error.param")
        finally:
            self.client.v1.webhook_endpoints.delete(spare.id)

    def payment_succeeds(self):
        pi = self.pay(
            2000,
            metadata={"order_id": "ord_sdk_1"},
            description="sdk check",
            automatic_payment_methods={"enabled": True, "allow_redirects": "never"},
            expand=["latest_charge"],
        )
        expect(pi.id.startswith("pi_"), f"payment intent id {pi.id!r}")
        expect_eq(pi.object, "payment_intent", "payment_intent.object")
        expect_eq(pi.status, "succeeded", "status after confirm with pm_card_visa")
        expect_eq(pi.amount, 2000, "amount")
        expect_eq(pi.amount_received, 2000, "amount_received")
        expect_eq(pi.currency, "usd", "currency")
        expect_eq(pi.metadata["order_id"], "ord_sdk_1", "metadata[order_id]")
        expect(
            isinstance(pi.latest_charge, stripe.Charge),
            f"expand[]=latest_charge gave {type(pi.latest_charge).__name__}, not a Charge",
        )
        expect_eq(pi.latest_charge.amount, 2000, "latest_charge.amount")
        expect_eq(pi.latest_charge.status, "succeeded", "latest_charge.status")
        retrieved = self.client.v1.payment_intents.retrieve(pi.id)
        expect_eq(retrieved.status, "succeeded", "retrieved status")
        expect_eq(retrieved.amount, 2000, "retrieved amount")
        expect_eq(retrieved.currency, "usd", "retrieved currency")
        expect_eq(retrieved.metadata.to_dict(), {"order_id": "ord_sdk_1"}, "retrieved metadata")
        expect_eq(retrieved.latest_charge, pi.latest_charge.id, "unexpanded latest_charge")
        expanded = self.client.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge"]})
        expect_eq(expanded.latest_charge.id, pi.latest_charge.id, "GET expand[]=latest_charge")
        charge = self.client.v1.charges.retrieve(pi.latest_charge.id)
        expect_eq(charge.payment_intent, pi.id, "charge.payment_intent")

        delivery = self.receiver.wait_for(
            self.hook_path, about("payment_intent.succeeded", pi.id), "payment_intent.succeeded"
        )
        event = self.verified(delivery, self.endpoint.secret)
        expect_eq(event.type, "payment_intent.succeeded", "event type")
        expect_eq(event.data.object.id, pi.id, "event.data.object.id")
        expect_eq(event.data.object.metadata["order_id"], "ord_sdk_1", "event's metadata")
        # The check is not vacuous: another secret or a changed body fails.
        signature = delivery["headers"]["stripe-signature"]
        expect_raises(
            stripe.SignatureVerificationError,
            lambda: stripe.Webhook.construct_event(delivery["body"], signature, "whsec_wrong"),
            "construct_event with the wrong secret",
        )
        expect_raises(
            stripe.SignatureVerificationError,
            lambda: stripe.Webhook.construct_event(
                delivery["body"].replace(b"ord_sdk_1", b"ord_sdk_2"),
                signature,
                self.endpoint.secret,
            ),
            "construct_event on a changed body",
        )

    def decline_insufficient_funds(self):
        error = expect_raises(
            stripe.CardError,
            lambda: self.pay(1000, "pm_card_visa_chargeDeclinedInsufficientFunds"),
            "pm_card_visa_chargeDeclinedInsufficientFunds",
        )
        expect_eq(error.http_status, 402, "decline HTTP status")
        expect_eq(error.code, "card_declined", "decline error.code")
        expect_eq(error.error.decline_code, "insufficient_funds", "decline error.decline_code")
        expect_eq(error.error.type, "card_error", "decline error.type")
        pi = error.error.payment_intent
        expect(pi is not None, "the card error carries no payment_intent")
        expect_eq(pi.status, "requires_payment_method", "declined intent's status")
        expect_eq(
            pi.last_payment_error.decline_code,
            "insufficient_funds",
            "last_payment_error.decline_code",
        )
        expect(
            error.request_id and error.request_id.startswith("req_"),
            f"error.request_id {error.request_id!r} (the Request-Id header)",
        )
        retrieved = self.client.v1.payment_intents.retrieve(pi.id)
        expect_eq(retrieved.status, "requires_payment_method", "retrieved declined intent")
        # A decline is a result: retried with its Idempotency-Key, it replays.
        key = "sdk-decline-" + secrets.token_hex(8)
        declined = {
            "amount": 1100,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_chargeDeclined",
        }
        def decline():
            return expect_raises(
                stripe.CardError,
                lambda: self.client.v1.payment_intents.create(declined, {"idempotency_key": key}),
                "pm_card_chargeDeclined",
            )

        first, again = decline(), decline()
        expect_eq(first.error.decline_code, "generic_decline", "generic decline_code")
        expect_eq(
            again.error.payment_intent.id,
            first.error.payment_intent.id,
            "the replayed decline names the same intent",
        )
        expect_eq(again.headers.get("idempotent-replayed"), "true", "replayed decline header")
        delivery = self.receiver.wait_for(
            self.hook_path,
            about("payment_intent.payment_failed", pi.id),
            "payment_intent.payment_failed",
        )
        self.verified(delivery, self.endpoint.secret)

    def three_d_secure(self):
        pi = self.pay(
            3000, "pm_card_threeDSecure2Required", return_url="https://shop.example/return"
        )
        expect_eq(pi.status, "requires_action", "status with pm_card_threeDSecure2Required")
        expect_eq(pi.next_action.type, "redirect_to_url", "next_action.type")
        url = pi.next_action.redirect_to_url.url
        expect(
            isinstance(url, str) and url.startswith("http"),
            f"next_action.redirect_to_url.url is {url!r}",
        )
        self.receiver.wait_for(
            self.hook_path,
            about("payment_intent.requires_action", pi.id),
            "payment_intent.requires_action",
        )
        # The customer completes the emulator's 3-D Secure page: it redirects
        # (not followed: the return URL is not on loopback) to the return URL.
        parts = urllib.parse.urlsplit(url)
        expect(parts.hostname == "127.0.0.1", f"3-D Secure page {url!r} is not the emulator's")
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request("GET", f"{parts.path}?{parts.query}")
            response = connection.getresponse()
            response.read()
            expect_eq(response.status, 302, "3-D Secure page answer")
            location = response.getheader("Location", "")
        finally:
            connection.close()
        expect(location.startswith("https://shop.example/return?"), f"redirect to {location!r}")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        expect_eq(query.get("payment_intent"), [pi.id], "return URL's payment_intent")
        expect_eq(query.get("redirect_status"), ["succeeded"], "return URL's redirect_status")
        expect_eq(
            self.client.v1.payment_intents.retrieve(pi.id).status,
            "succeeded",
            "status after 3-D Secure",
        )

    def idempotency(self):
        key = "sdk-" + secrets.token_hex(8)
        params = {
            "amount": 1234,
            "currency": "eur",
            "confirm": True,
            "payment_method": "pm_card_visa",
            "metadata": {"order_id": "ord_idem"},
        }
        first = self.client.v1.payment_intents.create(params, {"idempotency_key": key})
        second = self.client.v1.payment_intents.create(params, {"idempotency_key": key})
        expect_eq(second.id, first.id, "id replayed for the same Idempotency-Key")
        expect_eq(second.status, "succeeded", "replayed status")
        headers = second.last_response.headers
        expect_eq(headers.get("idempotent-replayed"), "true", "Idempotent-Replayed header")
        expect_eq(
            headers.get("original-request"),
            first.last_response.request_id,
            "Original-Request header names the first request",
        )
        other = dict(params, amount=1235)
        error = expect_raises(
            stripe.IdempotencyError,
            lambda: self.client.v1.payment_intents.create(other, {"idempotency_key": key}),
            "same Idempotency-Key, other parameters",
        )
        expect_eq(error.http_status, 400, "idempotency_error status")
        # Without a key of ours the SDK sends its own: two creates, two intents.
        a = self.client.v1.payment_intents.create(params)
        b = self.client.v1.payment_intents.create(params)
        expect(a.id != b.id, "two creates without a shared key gave one intent")

    def manual_capture_and_cancel(self):
        pi = self.pay(
            6000,
            capture_method="manual",
            payment_method_types=["card"],
            payment_method_options={"card": {"request_three_d_secure": "automatic"}},
        )
        expect_eq(pi.status, "requires_capture", "manual capture status")
        expect_eq(pi.amount_capturable, 6000, "amount_capturable")
        error = expect_raises(
            stripe.InvalidRequestError,
            lambda: self.client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 6001}),
            "capture more than authorized",
        )
        expect_eq(error.param, "amount_to_capture", "over-capture error.param")
        captured = self.client.v1.payment_intents.capture(
            pi.id, {"amount_to_capture": 4500, "expand": ["latest_charge"]}
        )
        expect_eq(captured.status, "succeeded", "status after capture")
        expect_eq(captured.amount_received, 4500, "amount_received after partial capture")
        expect_eq(captured.latest_charge.amount_captured, 4500, "charge.amount_captured")
        held = self.pay(700, capture_method="manual")
        canceled = self.client.v1.payment_intents.cancel(
            held.id, {"cancellation_reason": "requested_by_customer"}
        )
        expect_eq(canceled.status, "canceled", "status after cancel")
        expect_eq(canceled.cancellation_reason, "requested_by_customer", "cancellation_reason")
        error = expect_raises(
            stripe.InvalidRequestError,
            lambda: self.client.v1.payment_intents.cancel(held.id),
            "cancel twice",
        )
        expect_eq(error.code, "payment_intent_unexpected_state", "cancel-twice error.code")
        self.receiver.wait_for(
            self.hook_path, about("payment_intent.canceled", held.id), "payment_intent.canceled"
        )

    def two_step_confirm(self):
        pi = self.client.v1.payment_intents.create(
            {"amount": 1500, "currency": "gbp", "automatic_payment_methods": {"enabled": True}}
        )
        expect_eq(pi.status, "requires_payment_method", "status before confirm")
        expect(pi.client_secret.startswith(pi.id + "_secret_"), "client_secret shape")
        confirmed = self.client.v1.payment_intents.confirm(
            pi.id, {"payment_method": "pm_card_mastercard", "return_url": "https://shop.example/r"}
        )
        expect_eq(confirmed.status, "succeeded", "status after confirm")
        expect_eq(confirmed.currency, "gbp", "currency")
        # A refund named by its charge rather than its payment intent.
        refund = self.client.v1.refunds.create({"charge": confirmed.latest_charge, "amount": 500})
        expect_eq(refund.payment_intent, pi.id, "refund by charge: payment_intent")
        expect_eq(refund.charge, confirmed.latest_charge, "refund by charge: charge")

    def event_retrieve(self):
        pi = self.pay(900, metadata={"order_id": "ord_event"})
        delivery = self.receiver.wait_for(
            self.hook_path, about("payment_intent.succeeded", pi.id), "payment_intent.succeeded"
        )
        delivered = self.verified(delivery, self.endpoint.secret)
        # A handler that trusts only the API re-reads the event by id.
        event = self.client.v1.events.retrieve(delivered.id)
        expect_eq(event.id, delivered.id, "retrieved event id")
        expect_eq(event.type, "payment_intent.succeeded", "retrieved event type")
        expect_eq(event.data.object.id, pi.id, "retrieved event's object")
        expect(
            isinstance(event.data.object, stripe.PaymentIntent),
            f"event.data.object is {type(event.data.object).__name__}, not a PaymentIntent",
        )
        error = expect_raises(
            stripe.InvalidRequestError,
            lambda: self.client.v1.events.retrieve("evt_doesnotexist"),
            "unknown event",
        )
        expect_eq(error.code, "resource_missing", "unknown event error.code")

    def refunds(self):
        pi = self.pay(5000, metadata={"order_id": "ord_refund"})
        partial = self.client.v1.refunds.create(
            {"payment_intent": pi.id, "amount": 1500, "reason": "requested_by_customer",
             "metadata": {"ticket": "T-1"}}
        )
        expect(partial.id.startswith("re_"), f"refund id {partial.id!r}")
        expect_eq(partial.object, "refund", "refund.object")
        expect_eq(partial.amount, 1500, "partial refund amount")
        expect_eq(partial.status, "succeeded", "partial refund status")
        expect_eq(partial.payment_intent, pi.id, "refund.payment_intent")
        expect_eq(partial.currency, "usd", "refund.currency")
        expect_eq(partial.metadata["ticket"], "T-1", "refund.metadata[ticket]")
        full = self.client.v1.refunds.create({"payment_intent": pi.id})
        expect_eq(full.amount, 3500, "refund without amount refunds the rest")
        expect_eq(full.status, "succeeded", "full refund status")
        retrieved = self.client.v1.refunds.retrieve(partial.id)
        expect_eq(retrieved.id, partial.id, "retrieved refund id")
        expect_eq(retrieved.amount, 1500, "retrieved refund amount")
        expect_eq(retrieved.status, "succeeded", "retrieved refund status")
        charge = self.client.v1.charges.retrieve(pi.latest_charge)
        expect_eq(charge.amount_refunded, 5000, "charge.amount_refunded")
        expect_eq(charge.refunded, True, "charge.refunded")
        error = expect_raises(
            stripe.InvalidRequestError,
            lambda: self.client.v1.refunds.create({"payment_intent": pi.id}),
            "refund of a fully refunded charge",
        )
        expect_eq(error.code, "charge_already_refunded", "refund-again error.code")

        created = self.receiver.wait_for(
            self.hook_path, about("refund.created", partial.id), "refund.created (partial)"
        )
        event = self.verified(created, self.endpoint.secret)
        expect_eq(event.data.object.amount, 1500, "refund.created event amount")
        refunded = self.receiver.wait_for(
            self.hook_path,
            lambda d: raw_event(d)["type"] == "charge.refunded"
            and raw_event(d)["data"]["object"]["id"] == pi.latest_charge,
            "charge.refunded",
        )
        self.verified(refunded, self.endpoint.secret)
        # The endpoint that enabled only refund.created got it, signed with its own secret.
        only = self.receiver.wait_for(
            self.refund_hook_path, about("refund.created", full.id), "refund.created (2nd endpoint)"
        )
        self.verified(only, self.refund_endpoint.secret)
        kinds = {raw_event(d)["type"] for d in self.receiver.deliveries(self.refund_hook_path)}
        expect_eq(kinds, {"refund.created"}, "types delivered to the refund.created endpoint")

    def pending_refund(self):
        pi = self.pay(2500, "pm_card_pendingRefund")
        expect_eq(pi.status, "succeeded", "pm_card_pendingRefund payment status")
        refund = self.client.v1.refunds.create({"payment_intent": pi.id, "amount": 1000})
        expect_eq(refund.status, "pending", "refund status for pm_card_pendingRefund")
        expect_eq(
            self.client.v1.refunds.retrieve(refund.id).status, "pending", "retrieved pending refund"
        )
        # The bank finishes it (emulator control): refund.updated, verified.
        settled = self.control(f"/_emulator/refunds/{refund.id}/succeed")
        expect_eq(settled.get("status"), "succeeded", "control's settled refund")
        delivery = self.receiver.wait_for(
            self.hook_path, about("refund.updated", refund.id), "refund.updated"
        )
        event = self.verified(delivery, self.endpoint.secret)
        expect_eq(event.data.object.status, "succeeded", "refund.updated event status")
        expect_eq(self.client.v1.refunds.retrieve(refund.id).status, "succeeded", "settled refund")

    def dashboard_refund(self):
        pi = self.pay(4000)
        refund = self.control(f"/_emulator/payment_intents/{pi.id}/refund", {"amount": 700})
        expect_eq(refund.get("amount"), 700, "dashboard refund amount")
        created = self.receiver.wait_for(
            self.hook_path, about("refund.created", refund["id"]), "refund.created (dashboard)"
        )
        event = self.verified(created, self.endpoint.secret)
        expect(event.request.id is None, f"dashboard event's request.id is {event.request.id!r}")
        refunded = self.receiver.wait_for(
            self.hook_path,
            lambda d: raw_event(d)["type"] == "charge.refunded"
            and raw_event(d)["data"]["object"]["payment_intent"] == pi.id,
            "charge.refunded (dashboard)",
        )
        event = self.verified(refunded, self.endpoint.secret)
        expect_eq(event.data.object.amount_refunded, 700, "charge.refunded amount_refunded")
        via_sdk = self.client.v1.refunds.retrieve(refund["id"])
        expect_eq(via_sdk.amount, 700, "dashboard refund retrieved with the SDK")

    def invalid_key(self):
        bad = stripe.StripeClient(
            "sk_live_not_accepted_here", base_addresses={"api": self.base}, max_network_retries=0
        )
        error = expect_raises(
            stripe.AuthenticationError, bad.v1.balance.retrieve, "a key the emulator refuses"
        )
        expect_eq(error.http_status, 401, "bad key HTTP status")
        expect("sk_live_not_accepted_here" not in str(error), "the 401 echoes the whole key")

    def unknown_ids(self):
        for what, call in [
            ("payment_intent", lambda: self.client.v1.payment_intents.retrieve("pi_doesnotexist")),
            ("refund", lambda: self.client.v1.refunds.retrieve("re_doesnotexist")),
            ("charge", lambda: self.client.v1.charges.retrieve("ch_doesnotexist")),
            ("webhook_endpoint", lambda: self.client.v1.webhook_endpoints.retrieve("we_nope")),
        ]:
            error = expect_raises(stripe.InvalidRequestError, call, f"unknown {what}")
            expect_eq(error.code, "resource_missing", f"unknown {what} error.code")
            expect_eq(error.http_status, 404, f"unknown {what} HTTP status")
        error = expect_raises(
            stripe.InvalidRequestError,
            lambda: self.pay(100, "pm_doesnotexist"),
            "unknown payment_method",
        )
        expect_eq(error.code, "resource_missing", "unknown payment_method error.code")
        expect_eq(error.param, "payment_method", "unknown payment_method error.param")

    def webhook_endpoint_delete(self):
        for endpoint in (self.endpoint, self.refund_endpoint):
            deleted = self.client.v1.webhook_endpoints.delete(endpoint.id)
            expect_eq(deleted.id, endpoint.id, "deleted endpoint id")
            expect_eq(getattr(deleted, "deleted", None), True, "deleted flag")
            error = expect_raises(
                stripe.InvalidRequestError,
                lambda: self.client.v1.webhook_endpoints.retrieve(endpoint.id),
                "retrieve a deleted endpoint",
            )
            expect_eq(error.code, "resource_missing", "deleted endpoint error.code")
        remaining = self.client.v1.webhook_endpoints.list()
        expect_eq(len(remaining.data), 0, "endpoints left after deleting both")


def main():
    if len(sys.argv) != 2:
        print("usage: stripe_emulator.py <emulator base URL>", file=sys.stderr)
        return 2
    checks = Checks(sys.argv[1])
    print(f"stripe {stripe.VERSION} (API version {stripe.api_version}) against {checks.base}")
    # Order matters where a check relies on an earlier one: the endpoints are
    # registered first and deleted last.
    order = [
        checks.balance,
        checks.webhook_endpoint_create,
        checks.webhook_endpoint_list_and_retrieve,
        checks.webhook_endpoint_pagination,
        checks.payment_succeeds,
        checks.decline_insufficient_funds,
        checks.three_d_secure,
        checks.idempotency,
        checks.manual_capture_and_cancel,
        checks.two_step_confirm,
        checks.event_retrieve,
        checks.refunds,
        checks.pending_refund,
        checks.dashboard_refund,
        checks.invalid_key,
        checks.unknown_ids,
        checks.webhook_endpoint_delete,
    ]
    passed = failed = 0
    for check in order:
        name = check.__name__
        if checks.endpoint is None and name not in ("balance", "webhook_endpoint_create"):
            print(f"FAIL {name}: skipped, no webhook endpoint was created")
            failed += 1
            continue
        try:
            check()
        except CheckFailed as e:
            print(f"FAIL {name}: {e}")
            failed += 1
        except stripe.StripeError as e:
            print(
                f"FAIL {name}: the SDK raised {type(e).__name__} (HTTP {e.http_status}, "
                f"code {e.code}): {e.user_message or e}"
            )
            failed += 1
        except Exception:
            print(f"FAIL {name}: unexpected exception")
            traceback.print_exc(file=sys.stdout)
            failed += 1
        else:
            print(f"ok   {name}")
            passed += 1
    checks.receiver.stop()
    print(f"stripe-sdk: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
