# The C extension edge/sfu/_sendpath.c (built by scripts/compile_sfu.py; absent otherwise).

BUFFER_SIZE: int

class Sender:
    def __init__(
        self,
        *,
        protect: int,
        protect_rtcp: int,
        ctx: int,
        fd: int,
        host: str,
        port: int,
        rtp_limit: int,
        rtcp_limit: int,
    ) -> None: ...
    def send(self, data: bytes, /) -> int: ...
    def send_rtcp(self, data: bytes, /) -> int: ...
    def pending(self) -> bytes: ...
    def counts(self) -> tuple[int, int]: ...
