"""The Preview gate (SPEC B5, B6): a dry run reads the whole practice from XPM, so it burns the
firm's daily quota as a first sync does. Nothing is queued while a preview is queued or running,
nor within 5 minutes of the last one; and why a refused press was refused.

As with Start Sync (``domain.start_sync``), the check and the claim are one conditional write in
the Config table (``adapters.config_table.ConfigRepository.claim_preview``), so two clicks racing
each other queue one preview. These are the rules that write's condition and its refusal follow.

``preview_pending`` is cleared by the worker when the preview ends; if a worker died without
clearing it, the claim is honoured again after ``PENDING_STALE_AFTER``, as Start Sync's is, so a
firm is never locked out of previews for good. A preview is its own gate: a manual or scheduled
run does not hold it, and it does not hold them (it changes no sync state).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from xpm_sync.domain.errors import PreviewTooSoon
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.start_sync import cooldown_and_pending, too_soon

PREVIEW_COOLDOWN = timedelta(minutes=5)


def preview_refusal(config: FirmConfig, now: datetime) -> PreviewTooSoon:
    """Why a connected, configured firm's Preview was refused: the seconds to wait and the message."""
    cooldown_left, pending = cooldown_and_pending(
        config.preview_requested_at, config.preview_pending, now, PREVIEW_COOLDOWN
    )
    return too_soon(PreviewTooSoon, cooldown_left, pending, what="A preview", button="Preview")
