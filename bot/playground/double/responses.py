"""The bot's side of an interaction: the callback and the interaction-webhook message routes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MODAL_SUBMIT,
    DoubleInteraction,
    ResponseRecord,
)
from .messages import INTERACTION_FLAGS, create_message, delete_message, edit_message
from .model import EPHEMERAL, LOADING, Message, PartInfo
from .state import World
from .validate import number_components, validate_message, validate_modal
from .wire import ApiError, ParsedBody, form_error, invalid_form

JSON = dict[str, Any]

CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9
Outcome = tuple[JSON | None, Message | None]


def by_callback_route(world: World, interaction_id: int, token: str) -> DoubleInteraction:
    """The interaction for ``/interactions/{id}/{token}/callback`` (404 10062 if unknown)."""
    inter = world.interactions.get(interaction_id)
    if inter is None or inter.token != token:
        raise ApiError(404, 10062, "Unknown interaction")
    return inter


def by_webhook_route(world: World, app_id: int, token: str) -> DoubleInteraction:
    """The interaction for ``/webhooks/{app}/{token}`` (usability is checked in :func:`run`)."""
    inter = next((i for i in world.interactions.values() if i.token == token), None)
    if app_id != world.app_id or inter is None:
        raise ApiError(404, 10015, "Unknown Webhook")
    return inter


def _check_token(inter: DoubleInteraction) -> None:
    """Webhook routes work from the callback until the token is 15 minutes old."""
    if inter.token_expired:
        raise ApiError(401, 50027, "Invalid Webhook Token")
    if inter.acked_type is None:
        raise ApiError(404, 10015, "Unknown Webhook")


def run(
    world: World,
    inter: DoubleInteraction,
    *,
    kind: str,
    method: str,
    path: str,
    body: ParsedBody,
    target: str | None,
    op: Callable[[], Outcome],
) -> JSON | None:
    """Run ``op`` and record it (accepted or rejected) on the interaction."""
    payload = body.json if isinstance(body.json, dict) else None
    callback_type = payload.get("type") if payload is not None and kind == "callback" else None
    data = payload.get("data") if payload is not None and kind == "callback" else payload
    status, code, result, msg = 500, None, None, None
    try:
        if kind != "callback":
            _check_token(inter)
        result, msg = op()
        status = 200 if result is not None else 204
    except ApiError as err:
        status, code = err.status, err.code
        raise
    finally:
        now = world.clock.now()
        inter.record(
            ResponseRecord(
                kind=kind,
                method=method,
                path=path,
                status=status,
                code=code,
                callback_type=callback_type,
                data=data,
                files=tuple(
                    PartInfo(f.field, f.filename, f.size, f.content_type) for f in body.files
                ),
                message_id=msg.id if msg is not None else None,
                target=target,
                at=now,
                elapsed_s=now - inter.dispatched_at,
            )
        )
    return result


def callback(world: World, inter: DoubleInteraction, body: ParsedBody) -> Outcome:
    """``POST /interactions/{id}/{token}/callback``: the one allowed initial response."""
    payload = body.payload()
    ctype = payload.get("type")
    data = payload.get("data") or {}
    if inter.acked_type is not None:
        raise ApiError(400, 40060, "Interaction has already been acknowledged.")
    if inter.age() > world.ack_deadline_s:
        raise ApiError(404, 10062, "Unknown interaction")
    msg: Message | None = None
    if inter.type == AUTOCOMPLETE and ctype != AUTOCOMPLETE_RESULT:
        raise _bad_type("autocomplete interactions only accept type 8")
    if ctype == CHANNEL_MESSAGE:
        msg = _new_message(world, inter, data, body)
        inter.original_message_id = msg.id
    elif ctype == DEFERRED_MESSAGE:
        flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
        msg = _new_message(world, inter, {}, ParsedBody(), extra_flags=flags, validate=False)
        inter.original_message_id = msg.id
    elif ctype in (DEFERRED_UPDATE, UPDATE_MESSAGE):
        if inter.source_message_id is None:
            raise _bad_type("types 6 and 7 need a component (or modal-from-component) interaction")
        inter.original_message_id = inter.source_message_id
        if ctype == UPDATE_MESSAGE:
            msg = edit_message(world, world.messages[inter.source_message_id], data, body.files)
    elif ctype == AUTOCOMPLETE_RESULT:
        if inter.type != AUTOCOMPLETE:
            raise _bad_type("type 8 is only valid for autocomplete interactions")
        if len(data.get("choices") or []) > 25:
            raise invalid_form({"data": {"choices": form_error("BASE_TYPE_MAX_LENGTH", "<= 25")}})
    elif ctype == MODAL:
        if inter.type == MODAL_SUBMIT:
            raise _bad_type("a modal submit cannot be answered with another modal")
        validate_modal(data)
        inter.modal = copy.deepcopy(data)
        number_components(inter.modal["components"])
    else:
        raise _bad_type(f"unsupported interaction callback type {ctype!r}")
    inter.acked_type = ctype
    return _callback_json(world, inter, ctype, msg), msg


def followup(world: World, inter: DoubleInteraction, body: ParsedBody, wait: bool) -> Outcome:
    """``POST /webhooks/{app}/{token}``; the first one after a defer fills the loading message."""
    payload = body.payload()
    original = inter.original_message
    if inter.acked_type == DEFERRED_MESSAGE and original is not None and original.loading:
        validate_message(payload, files=len(body.files), creating=True)
        edit = {k: v for k, v in payload.items() if k != "flags"}
        msg = edit_message(world, original, edit, body.files)
    else:
        md = _metadata(world, inter)
        if inter.original_message_id is not None:
            md["original_response_message_id"] = str(inter.original_message_id)
        msg = _new_message(world, inter, payload, body, metadata=md)
        inter.followup_ids.append(msg.id)
    return (world.message_json(msg) if wait else None), msg


def get_message(world: World, inter: DoubleInteraction, target: str) -> Outcome:
    msg = _target(world, inter, target)
    return world.message_json(msg), msg


def patch_message(world: World, inter: DoubleInteraction, target: str, body: ParsedBody) -> Outcome:
    msg = edit_message(world, _target(world, inter, target), body.payload(), body.files)
    return world.message_json(msg), msg


def remove_message(world: World, inter: DoubleInteraction, target: str) -> Outcome:
    msg = _target(world, inter, target)
    delete_message(world, msg)
    return None, msg


def _target(world: World, inter: DoubleInteraction, target: str) -> Message:
    own = {inter.original_message_id, *inter.followup_ids}
    if target == "@original":
        mid = inter.original_message_id
    else:
        mid = int(target) if target.isdigit() and int(target) in own else None
    msg = world.messages.get(mid) if mid is not None else None
    if msg is None or msg.deleted:
        raise ApiError(404, 10008, "Unknown Message")
    return msg


def _new_message(
    world: World,
    inter: DoubleInteraction,
    data: JSON,
    body: ParsedBody,
    *,
    extra_flags: int = 0,
    validate: bool = True,
    metadata: JSON | None = None,
) -> Message:
    return create_message(
        world,
        world.channels[inter.channel_id],
        data,
        body.files,
        allowed_flags=INTERACTION_FLAGS,
        extra_flags=extra_flags,
        msg_type=20 if inter.type == APPLICATION_COMMAND else 0,
        webhook_id=world.app_id,
        interaction_id=inter.id,
        interaction_metadata=metadata or _metadata(world, inter),
        validate=validate,
    )


def _metadata(world: World, inter: DoubleInteraction) -> JSON:
    out: JSON = {
        "id": str(inter.id),
        "type": inter.type,
        "user": world.users[inter.user_id].to_json(),
        "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
    }
    if inter.type == APPLICATION_COMMAND:
        command = inter.payload.get("data") or {}
        out["name"] = inter.name
        out["command_type"] = int(command.get("type", 1))
        if "target_id" in command:
            out["target_message_id" if out["command_type"] == 3 else "target_user_id"] = command[
                "target_id"
            ]
    if inter.source_message_id is not None:
        out["interacted_message_id"] = str(inter.source_message_id)
    return out


def _callback_json(world: World, inter: DoubleInteraction, ctype: int, msg: Message | None) -> JSON:
    info: JSON = {"id": str(inter.id), "type": inter.type}
    original = inter.original_message
    if original is not None and ctype in (CHANNEL_MESSAGE, DEFERRED_MESSAGE, UPDATE_MESSAGE):
        info["response_message_id"] = str(original.id)
        info["response_message_loading"] = original.loading
        info["response_message_ephemeral"] = original.ephemeral
    resource: JSON = {"type": ctype}
    if msg is not None:
        resource["message"] = world.message_json(msg)
    return {"interaction": info, "resource": resource}


def _bad_type(message: str) -> ApiError:
    return invalid_form({"type": form_error("INTERACTION_RESPONSE_TYPE_INVALID", message)})
