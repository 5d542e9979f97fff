"""The fax call: one SIP call with its media and T.30 engine (fax_call), the line that places and answers
calls (line), the T.38/G.711 media policy (media), and the FSP-style device the controller drives (device)."""
