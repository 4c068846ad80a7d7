import FleetwardTestSupport
import Foundation
import Testing

/// The management API's listener bounds slow and abusive clients as the device listeners do:
/// silent connections, partial request heads and short bodies are closed by their deadlines, and
/// a large body sent without a token is refused (401) and the connection closed before the body
/// is read.
@Suite(.tags(.slow)) struct ManagementListenerTests {
    @Test func slowClientsAreClosedAndAnUnauthenticatedBigBodyIsNotRead() throws {
        let fixture = try ESTFixture(serveArguments: ["--api-idle-timeout", "2", "--request-timeout", "2"])
        let url = try #require(URL(string: fixture.api))
        let host = url.host ?? "127.0.0.1"
        let port = try #require(url.port)
        let script = """
            import socket, time
            def connect():
                s = socket.create_connection(("\(host)", \(port)), timeout=10)
                return s
            silent = [connect() for _ in range(40)]
            partial = [connect() for _ in range(40)]
            for s in partial: s.sendall(b"GET /api/v1/devices HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bear")
            short = [connect() for _ in range(40)]
            for s in short:
                s.sendall(b"POST /ocsp HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/ocsp-request\\r\\nContent-Length: 100\\r\\n\\r\\n0123456789")
            # 17 MiB announced, no token: the answer must come after the first 64 KiB, then the close.
            big = connect()
            big.sendall(b"POST /api/v1/devices/import HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: text/csv\\r\\nContent-Length: 17825792\\r\\n\\r\\n")
            big.sendall(b"x" * 65536)
            answer = b""
            while b"\\r\\n\\r\\n" not in answer:
                chunk = big.recv(4096)
                if not chunk: break
                answer += chunk
            print("big-status", answer.split(b"\\r\\n")[0].decode(errors="replace").replace(" ", "_"))
            sent, closed = 65536, False
            try:
                while sent < 17825792:
                    big.sendall(b"x" * 65536)
                    sent += 65536
            except OSError:
                closed = True
            print("big-closed", closed, "sent", sent)
            time.sleep(4.5)
            def gone(s):
                s.setblocking(False)
                try:
                    while True:
                        data = s.recv(65536)
                        if data == b"": return True
                except BlockingIOError:
                    return False
                except OSError:
                    return True
            for name, group in (("silent", silent), ("partial", partial), ("short", short)):
                print(name, sum(1 for s in group if gone(s)), "of", len(group))
            """
        let result = try Tool("python3").run(["-c", script], timeout: 60)
        try #require(result.succeeded, "\(result)")
        let words = result.stdout.split(whereSeparator: \.isWhitespace).map(String.init)
        func value(after word: String, offset: Int = 1) -> String? {
            words.firstIndex(of: word).flatMap { $0 + offset < words.count ? words[$0 + offset] : nil }
        }
        #expect(value(after: "big-status") == "HTTP/1.1_401_Unauthorized", "\(result.stdout)")
        #expect(value(after: "big-closed") == "True", "the server read the whole 17 MiB body: \(result.stdout)")
        if let sent = value(after: "sent", offset: 1).flatMap(Int.init) {
            #expect(sent < 17_825_792, "all of the body was accepted: \(result.stdout)")
        }
        for name in ["silent", "partial", "short"] {
            #expect(value(after: name) == "40", "\(name) connections outlived their deadline: \(result.stdout)")
        }
        // The server still answers.
        let (status, _) = try fixture.apiCall("GET", "/devices", token: fixture.admin)
        #expect(status == 200)
    }
}
