"""The names of an outbound job's options: one vocabulary for the API, the job store, the retry policy
and the controller.

A job's options are a JSON object stored with the job. The API (and ``vfax send`` through it) writes
them, the retry policy lowers :data:`OPT_MAX_BIT_RATE` and :data:`OPT_ECM` for a fall-back, and the
controller reads them when it turns the job into a call (:class:`vfax.call.device.FaxSend`). An option that
is absent means "the device's configured value" (``[device.*]`` in vfax.toml). The names match the
device settings of the same meaning (``ecm``, ``max_bit_rate``).

Before store schema version 3 the retry policy wrote the bit rate as ``max_bitrate``, a name the
controller never read; migration 3 of :mod:`vfax.store.sqlite` renames it in stored jobs.
"""

from __future__ import annotations

OPT_ECM = "ecm"  # bool: error correction mode
OPT_MAX_BIT_RATE = "max_bit_rate"  # int, bit/s: a ceiling; the device's own ceiling still applies
OPT_HEADER = "header"  # page header text
OPT_TSID = "tsid"  # our number, sent as T.30 TSI
OPT_SENDER_NAME = "sender_name"
OPT_RECIPIENT_NAME = "recipient_name"
OPT_T38 = "t38"  # T.38 policy: auto, off, only or direct
