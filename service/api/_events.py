"""EventService: convert, delegate to the events service, convert back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from agentstaking.v1 import events_pb2, events_pb2_grpc

from service.core.errors import FieldErrors
from service.events import Events

from ._errors import handle_errors, handle_stream_errors
from ._event_converters import (
    delivery_state_to_domain,
    delivery_to_proto,
    event_to_proto,
    webhook_spec_to_domain,
    webhook_state_to_domain,
    webhook_to_proto,
    webhook_update_paths,
)
from ._key_converters import duration_to_timedelta
from ._principal import required_principal

Context = grpc.aio.ServicerContext[Any, Any]


class EventServicer(events_pb2_grpc.EventServiceServicer):
    """Every EventService RPC: one call into :class:`service.events.Events`."""

    def __init__(self, events: Events) -> None:
        self._events = events

    @handle_stream_errors
    async def WatchEvents(
        self, request: events_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[events_pb2.WatchEventsResponse]:
        watch = self._events.watch(
            required_principal(),
            wallets=list(request.wallets),
            types=list(request.types),
            since_event_id=request.since_event_id,
        )
        # Closed explicitly so the subscription ends with the call, however it ends.
        async with contextlib.aclosing(watch) as events:
            async for event in events:
                if event is None:
                    # The stream follows the events: the initial metadata (x-request-id,
                    # x-ratelimit-*) tells the client so, however long the first event
                    # takes.
                    await context.send_initial_metadata(())
                else:
                    yield events_pb2.WatchEventsResponse(event=event_to_proto(event))

    @handle_errors
    async def CreateWebhook(
        self, request: events_pb2.CreateWebhookRequest, context: Context
    ) -> events_pb2.CreateWebhookResponse:
        errors = FieldErrors()
        # Output only here: a known state is ignored, an unknown one refused.
        errors.check(lambda: webhook_state_to_domain(request.webhook.state))
        webhook, secret = await self._events.create_webhook(
            required_principal(), webhook_spec_to_domain(request.webhook), errors=errors
        )
        return events_pb2.CreateWebhookResponse(webhook=webhook_to_proto(webhook), secret=secret)

    @handle_errors
    async def GetWebhook(
        self, request: events_pb2.GetWebhookRequest, context: Context
    ) -> events_pb2.GetWebhookResponse:
        webhook = await self._events.get_webhook(required_principal(), request.name)
        return events_pb2.GetWebhookResponse(webhook=webhook_to_proto(webhook))

    @handle_errors
    async def ListWebhooks(
        self, request: events_pb2.ListWebhooksRequest, context: Context
    ) -> events_pb2.ListWebhooksResponse:
        webhooks, next_token = await self._events.list_webhooks(
            required_principal(), page_size_value=request.page_size, page_token=request.page_token
        )
        return events_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_proto(w) for w in webhooks], next_page_token=next_token
        )

    @handle_errors
    async def UpdateWebhook(
        self, request: events_pb2.UpdateWebhookRequest, context: Context
    ) -> events_pb2.UpdateWebhookResponse:
        errors = FieldErrors()
        paths = webhook_update_paths(request, errors)
        state = errors.check(lambda: webhook_state_to_domain(request.webhook.state))
        webhook = await self._events.update_webhook(
            required_principal(),
            request.webhook.name,
            webhook_spec_to_domain(request.webhook),
            paths=paths,
            state=state,
            errors=errors,
        )
        return events_pb2.UpdateWebhookResponse(webhook=webhook_to_proto(webhook))

    @handle_errors
    async def DeleteWebhook(
        self, request: events_pb2.DeleteWebhookRequest, context: Context
    ) -> events_pb2.DeleteWebhookResponse:
        await self._events.delete_webhook(required_principal(), request.name)
        return events_pb2.DeleteWebhookResponse()

    @handle_errors
    async def RotateWebhookSecret(
        self, request: events_pb2.RotateWebhookSecretRequest, context: Context
    ) -> events_pb2.RotateWebhookSecretResponse:
        errors = FieldErrors()
        grace = (
            errors.check(lambda: duration_to_timedelta(request.grace_period, field="grace_period"))
            if request.HasField("grace_period")
            else None
        )
        webhook, secret = await self._events.rotate_secret(
            required_principal(), request.name, grace=grace, errors=errors
        )
        return events_pb2.RotateWebhookSecretResponse(
            webhook=webhook_to_proto(webhook), secret=secret
        )

    @handle_errors
    async def SendTestEvent(
        self, request: events_pb2.SendTestEventRequest, context: Context
    ) -> events_pb2.SendTestEventResponse:
        event = await self._events.send_test(required_principal(), request.name)
        return events_pb2.SendTestEventResponse(event=event_to_proto(event))

    @handle_errors
    async def ListWebhookDeliveries(
        self, request: events_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> events_pb2.ListWebhookDeliveriesResponse:
        errors = FieldErrors()
        state = errors.check(lambda: delivery_state_to_domain(request.state))
        deliveries, next_token = await self._events.list_deliveries(
            required_principal(),
            request.name,
            state=state,
            page_size_value=request.page_size,
            page_token=request.page_token,
            errors=errors,
        )
        return events_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in deliveries], next_page_token=next_token
        )
