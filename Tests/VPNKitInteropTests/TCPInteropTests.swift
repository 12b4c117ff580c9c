import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitTestSupport
import VPNKitBase
import VPNKitStack
import VPNKitTCP
import VPNKitRuntime

@Suite("TCP against the Linux kernel", .serialized, .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct TCPInteropTests {
    @Test("python in the namespace: 4 MiB echoed intact through our TCP; a closed port is refused; many short connections", arguments: [1500, 65520])
    func kernelClient(mtu: Int) throws {
        let link = try InProcessGuestLink(label: "tcp\(mtu)", mtu: mtu, udpEchoPort: nil)
        defer { link.shutdown() }
        let driver = link.driver
        try link.loop.submit {
            let d = driver.value
            d.keep(try DiagnosticServices(stack: d.stack))
        }.wait()
        let script = """
            import os, socket, hashlib, sys
            data = os.urandom(4 << 20)
            s = socket.create_connection(("192.168.65.1", 7), timeout=20)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            import threading
            got = bytearray()
            def reader():
                while len(got) < len(data):
                    chunk = s.recv(1 << 20)
                    if not chunk: break
                    got.extend(chunk)
            t = threading.Thread(target=reader); t.start()
            s.sendall(data)
            t.join(30)
            assert bytes(got) == data, f"echo differs: {len(got)} of {len(data)}"
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b"", "expected EOF after our FIN"
            s.close()
            for i in range(50):
                c = socket.create_connection(("192.168.65.1", 7), timeout=5)
                c.sendall(b"x"); assert c.recv(1) == b"x"; c.close()
            try:
                socket.create_connection(("192.168.65.1", 9999), timeout=5)
                print("connected?!"); sys.exit(2)
            except ConnectionRefusedError:
                print("refused")
            print("ok")
            """
        let result = try link.namespace.exec(["python3", "-c", script], timeout: 90)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        #expect(result.output.contains("refused") && result.output.contains("ok"))
        let counters = try link.counters()
        #expect(counters[.tcpResetsSent] >= 1)
        #expect(counters[.tcpConnectionsOpened] == 51)
        print("TCP interop at MTU \(mtu): \(counters.nonZero.filter { $0.name.hasPrefix("tcp") }.map { "\($0.name)=\($0.value)" })")
    }

    @Test("our stack connects out to a python server in the namespace: 64 MiB, hash checked by the server")
    func kernelServer() throws {
        let link = try InProcessGuestLink(label: "tcpout", udpEchoPort: nil)
        defer { link.shutdown() }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", link.namespace.name, "python3", "-c", """
            import hashlib, socket
            l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(("192.168.65.3", 8000)); l.listen(1)
            c, _ = l.accept()
            total = 0; h = hashlib.sha256()
            while True:
                d = c.recv(1 << 20)
                if not d: break
                total += len(d); h.update(d)
            c.sendall(f"{total} {h.hexdigest()}".encode()); c.close()
            """]
        try server.run()
        defer { if server.isRunning { server.terminate() } }
        usleep(500_000)
        let driver = link.driver
        let reply = LockedData()
        // 64 MiB of a pattern whose SHA-256 we compute with the system's sha256sum.
        var payload = ByteBuffer()
        payload.reserveCapacity(64 << 20)
        var state: UInt64 = 0x1234_5678
        for _ in 0..<((64 << 20) / 8) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            payload.writeInteger(state)
        }
        let sending = payload
        try link.loop.submit {
            let d = driver.value
            let socket = try d.stack.connectTCP(to: .v4(IPv4Address(192, 168, 65, 3)), port: 8000, now: .now())
            var toSend = sending
            var answer = ByteBuffer()
            let push = { [unowned socket] in
                toSend.moveReaderIndex(forwardBy: socket.write(toSend, now: .now()))
                if toSend.readableBytes == 0, socket.state == .established { socket.close(now: .now()) }
            }
            socket.onConnected = push
            socket.onWritable = push
            socket.onReadable = { [unowned socket] in
                while var chunk = socket.read(now: .now()) { answer.writeBuffer(&chunk) }
                reply.set(Data(answer.readableBytesView))
            }
            d.keep(socket)
            d.flush()
        }.wait()
        let expected = "\(payload.readableBytes) \(sha256Hex(payload))"
        let deadline = Date().addingTimeInterval(120)
        while String(decoding: reply.get(), as: UTF8.self) != expected && Date() < deadline { usleep(20_000) }
        #expect(String(decoding: reply.get(), as: UTF8.self) == expected)
    }
}

/// SHA-256 of a buffer, by the system's sha256sum (no crypto dependency for one test).
func sha256Hex(_ buffer: ByteBuffer) -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-sha-\(getpid())").path
    guard FileManager.default.createFile(atPath: path, contents: Data(buffer.readableBytesView)) else { return "" }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let result = try? run("/usr/bin/sha256sum", [path], timeout: 30)
    return String(result?.output.split(separator: " ").first ?? "")
}
