"""A byte-for-byte relay between a TCP port and a Unix socket, to carry a broker's port into a
private network namespace (a Unix socket is a file, so it is reachable from both sides).

    tcp_relay.py unix-to-tcp SOCKET HOST PORT   # outside: SOCKET -> the broker at HOST:PORT
    tcp_relay.py tcp-to-unix PORT SOCKET        # inside:  127.0.0.1:PORT -> SOCKET

Half-closes are passed on, so a client sees the broker's close exactly as it happens. Runs until
killed.
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, OSError):
            pass


async def relay(client_reader, client_writer, open_upstream):
    try:
        up_reader, up_writer = await open_upstream()
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))
    for w in (client_writer, up_writer):
        w.close()


async def main(argv):
    mode = argv[1]
    if mode == "unix-to-tcp":
        sock, host, port = argv[2], argv[3], int(argv[4])
        server = await asyncio.start_unix_server(
            lambda r, w: relay(r, w, lambda: asyncio.open_connection(host, port)), path=sock)
    elif mode == "tcp-to-unix":
        port, sock = int(argv[2]), argv[3]
        server = await asyncio.start_server(
            lambda r, w: relay(r, w, lambda: asyncio.open_unix_connection(sock)),
            host="127.0.0.1", port=port)
    else:
        sys.exit(__doc__)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv))
