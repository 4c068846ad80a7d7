import FleetwardDevice
import FleetwardTestSupport
import SwiftASN1
import Foundation
import Testing
import X509

/// The device's EST client against a server nobody here wrote: `openssl s_server -WWW` serving a
/// certs-only PKCS#7 made by `openssl crl2pkcs7`. It must trust only its pinned root and the
/// server's name.
@Suite struct PinnedTLSTests {
    /// A CA and a server certificate for `names` under it, made with openssl.
    final class OpenSSLServer {
        let openssl: Tool
        let directory: TemporaryDirectory
        var process: Process?
        var port = 0
        /// What the running s_server printed, for failure messages.
        var output: String {
            (try? String(contentsOfFile: directory.file("s_server-\(port).log"), encoding: .utf8)) ?? "(no log)"
        }

        init() throws {
            openssl = try Tool.openssl()
            directory = try TemporaryDirectory(prefix: "fleetward-pinned")
        }

        deinit {
            // Ours alone, by its PID. SIGKILL: a child spawned from a dispatch worker inherits its
            // blocked SIGTERM, and s_server has nothing to clean up. Not waited for:
            // waitUntilExit can hang off the thread that started the process.
            if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
            directory.remove()
        }

        func run(_ arguments: [String]) throws {
            let result = try openssl.run(arguments, currentDirectory: directory.path)
            guard result.succeeded else { throw Tool.Missing(description: "openssl \(arguments.joined(separator: " ")): \(result.stderr)") }
        }

        /// `NAME.pem`/`NAME.key`: a self-signed P-256 CA.
        func makeCA(_ name: String) throws -> Certificate {
            try run([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key",
                "-out", "\(name).pem", "-subj", "/CN=\(name)", "-days", "30",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            ])
            return try Certificate(pemEncoded: String(contentsOfFile: directory.file("\(name).pem"), encoding: .utf8))
        }

        /// Starts s_server with a certificate for `sans` under `ca`, serving `.well-known/est/cacerts`.
        func start(ca: String, sans: String) throws {
            try run([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
                "-subj", "/CN=server", "-out", "server.csr",
            ])
            try "subjectAltName=\(sans)\n".write(toFile: directory.file("server.ext"), atomically: true, encoding: .utf8)
            try run([
                "x509", "-req", "-in", "server.csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-days", "30",
                "-extfile", "server.ext", "-out", "server.pem",
            ])
            let www = directory.file("www")
            try FileManager.default.createDirectory(atPath: www + "/.well-known/est", withIntermediateDirectories: true)
            let pkcs7 = try openssl.run(["crl2pkcs7", "-nocrl", "-certfile", "\(ca).pem"], currentDirectory: directory.path)
            let body = pkcs7.stdout.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined(separator: "\n") + "\n"
            try body.write(toFile: www + "/.well-known/est/cacerts", atomically: true, encoding: .utf8)
            for _ in 0..<5 {
                let candidate = Listening.candidatePort()
                let log = directory.file("s_server-\(candidate).log")
                FileManager.default.createFile(atPath: log, contents: nil)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: openssl.executable)
                process.arguments = [
                    "s_server", "-accept", "127.0.0.1:\(candidate)", "-cert", "../server.pem", "-key", "../server.key", "-WWW",
                ]
                process.currentDirectoryURL = URL(fileURLWithPath: www)
                let output = FileHandle(forWritingAtPath: log)
                process.standardOutput = output
                process.standardError = output
                process.standardInput = FileHandle.nullDevice
                try process.launchSerialized()
                try? output?.close()
                for _ in 0..<100 where process.isRunning {
                    if (try? String(contentsOfFile: log, encoding: .utf8))?.contains("ACCEPT") == true {
                        self.process = process
                        port = candidate
                        return
                    }
                    Thread.sleep(forTimeInterval: 0.05)
                }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            throw Tool.TimedOut(description: "openssl s_server did not start")
        }
    }

    @Test(arguments: ["localhost", nil] as [String?])
    func thePinnedRootAndTheRightNameAreTrusted(_ serverName: String?) async throws {
        // One s_server per client: under a loaded machine, s_server -WWW sometimes never came
        // back to accept a second connection after answering the first (its log showed one
        // request served, no second ACCEPT), which failed the client that came second.
        let server = try OpenSSLServer()
        let root = try server.makeCA("fleet-root")
        try server.start(ca: "fleet-root", sans: "DNS:localhost,IP:127.0.0.1")
        // By name (SNI and the name check) or by the address connected to.
        let client = ESTClient(host: "127.0.0.1", port: server.port, roots: [root], serverName: serverName)
        do {
            #expect(try await client.caCertificates() == [root])
        } catch {
            Issue.record("\(error); openssl s_server printed: \(server.output)")
        }
    }

    @Test func aServerFromAnotherCAIsRefused() async throws {
        let server = try OpenSSLServer()
        let pinned = try server.makeCA("fleet-root")
        _ = try server.makeCA("other-ca")
        try server.start(ca: "other-ca", sans: "DNS:localhost,IP:127.0.0.1")
        let client = ESTClient(host: "127.0.0.1", port: server.port, roots: [pinned], serverName: "localhost")
        let error = await #expect(throws: DeviceError.self) { try await client.caCertificates() }
        #expect(error?.code == .untrustedServer, "\(String(describing: error))")
        #expect(error?.message.contains("does not chain to the pinned root") == true, "\(String(describing: error))")
    }

    @Test func aValidCertificateForAnotherNameIsRefused() async throws {
        let server = try OpenSSLServer()
        let root = try server.makeCA("fleet-root")
        try server.start(ca: "fleet-root", sans: "DNS:other.example")
        let client = ESTClient(host: "127.0.0.1", port: server.port, roots: [root], serverName: "localhost")
        let error = await #expect(throws: DeviceError.self) { try await client.caCertificates() }
        #expect(error?.code == .untrustedServer, "\(String(describing: error))")
        #expect(error?.message.contains("not for localhost") == true, "\(String(describing: error))")
        // Nor does the IP address stand in for a name the certificate lacks.
        let byAddress = ESTClient(host: "127.0.0.1", port: server.port, roots: [root])
        let second = await #expect(throws: DeviceError.self) { try await byAddress.caCertificates() }
        #expect(second?.code == .untrustedServer, "\(String(describing: second))")
    }

    @Test func nothingListeningIsUnreachable() async throws {
        let server = try OpenSSLServer()
        let root = try server.makeCA("fleet-root")
        // A port that was just free: bind, note it, close.
        let socket = try ServerSocketProbe()
        let client = ESTClient(host: "127.0.0.1", port: socket.freePort, roots: [root])
        let error = await #expect(throws: DeviceError.self) { try await client.caCertificates() }
        #expect(error?.code == .unreachable, "\(String(describing: error))")
        #expect(error?.message.contains("connection refused") == true, "\(String(describing: error))")
    }
}

/// A loopback port that nothing listens on: bound to learn a free number, then closed.
struct ServerSocketProbe {
    let freePort: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Tool.Missing(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Tool.Missing(description: "bind() failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        freePort = Int(UInt16(bigEndian: address.sin_port))
    }
}
