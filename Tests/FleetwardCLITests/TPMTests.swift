import FleetwardTestSupport
import Foundation
import Testing

/// Keys in a TPM: the CA's signing keys and a device's keys in tokens of tpm2-pkcs11 (Debian
/// `libtpm2-pkcs11-1`), over a software TPM (`swtpm`) behind the TPM2 access broker
/// (`tpm2-abrmd` on a private D-Bus session bus), tokens made by `tpm2_ptool`. Every process is
/// this test's own, ended by its PID.
@Suite(.tags(.slow)) struct TPMTests {
    static let module = ["/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so", "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so"]
        .first { FileManager.default.fileExists(atPath: $0) }

    /// swtpm, a D-Bus session bus and tpm2-abrmd, with tpm2-pkcs11 tokens `labels` (user PIN `pin`).
    final class SoftwareTPM {
        let directory: TemporaryDirectory
        private var processes: [Process] = []
        let environment: [String: String]
        let pin = "tpm-pin-\(UInt32.random(in: 0...UInt32.max))"

        init(labels: [String]) throws {
            directory = try TemporaryDirectory(prefix: "fleetward-tpm")
            for tool in ["swtpm", "tpm2-abrmd", "dbus-daemon", "tpm2_ptool"] { _ = try Tool(tool) }
            try FileManager.default.createDirectory(atPath: directory.file("state"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: directory.file("store"), withIntermediateDirectories: true)
            let state = directory.file("state")
            let (swtpm, port) = try Listening.start("swtpm") { port in
                (
                    try Tool("swtpm").executable,
                    [
                        "socket", "--tpm2", "--tpmstate", "dir=\(state)", "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1", "--ctrl",
                        "type=tcp,port=\(port + 1),bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear",
                    ]
                )
            }
            processes.append(swtpm)
            let bus = "unix:path=" + directory.file("bus")
            processes.append(try Self.launch(try Tool("dbus-daemon").executable, ["--session", "--nofork", "--nopidfile", "--address=\(bus)"], environment: [:]))
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: directory.file("bus")) { Thread.sleep(forTimeInterval: 0.05) }
            let session = ["DBUS_SESSION_BUS_ADDRESS": bus]
            processes.append(
                try Self.launch(
                    try Tool("tpm2-abrmd").executable, ["--session", "--allow-root", "--tcti=swtpm:host=127.0.0.1,port=\(port)"],
                    environment: session))
            environment = session.merging([
                "TPM2_PKCS11_TCTI": "tabrmd:bus_type=session", "TPM2TOOLS_TCTI": "tabrmd:bus_type=session",
                "TPM2_PKCS11_STORE": directory.file("store"), "TPM2_PKCS11_LOG_LEVEL": "0",
            ]) { $1 }
            let ptool = try Tool("tpm2_ptool")
            // The broker takes a moment to claim its bus name: the first init retries.
            var initialized = try ptool.run(["init", "--path", directory.file("store")], environment: environment)
            for _ in 0..<50 where !initialized.succeeded {
                Thread.sleep(forTimeInterval: 0.1)
                initialized = try ptool.run(["init", "--path", directory.file("store")], environment: environment)
            }
            guard initialized.succeeded else { throw Tool.Missing(description: "tpm2_ptool init failed: \(initialized)") }
            for label in labels {
                let added = try ptool.run(
                    ["addtoken", "--pid", "1", "--label", label, "--userpin", pin, "--sopin", "tpm-so-97531", "--path", directory.file("store")],
                    environment: environment)
                guard added.succeeded else { throw Tool.Missing(description: "tpm2_ptool addtoken failed: \(added)") }
            }
        }

        private static func launch(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.launchSerialized()
            return process
        }

        deinit {
            for process in processes.reversed() where process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            directory.remove()
        }
    }

    @Test func theCAAndADeviceKeepTheirKeysInTPM2PKCS11OverSwtpm() throws {
        guard let module = Self.module else {
            throw Tool.Missing(description: "tpm2-pkcs11 is not installed (scripts/test.sh installs libtpm2-pkcs11-1)")
        }
        let tpm = try SoftwareTPM(labels: ["tpm-ca", "tpm-device"])
        let pinned = tpm.environment.merging(["FLEETWARD_PKCS11_PIN": tpm.pin]) { $1 }

        // The CA: issuing, factory and release-signing keys made in the TPM; what they sign verifies.
        let fleetward = try FleetwardBinary.tool()
        let openssl = try Tool.openssl()
        let directory = tpm.directory
        let data = directory.file("data")
        let environment = pinned.merging(["FLEETWARD_PASSPHRASE": CLI.passphrase]) { $1 }
        let initialized = try fleetward.run(
            ["init", "--data", data, "--kdf-iterations", "10000", "--key-store", "pkcs11:token=tpm-ca", "--pkcs11-module", module],
            environment: environment, timeout: 120)
        try #require(initialized.succeeded, "\(initialized)")
        #expect(!FileManager.default.fileExists(atPath: data + "/ca/issuing.key"))
        let chain = ["-CAfile", data + "/ca/root.pem", "-untrusted", data + "/ca/issuing.pem"]
        let gateway = try openssl.run(["verify"] + chain + [data + "/tls/gateway.pem"])
        #expect(gateway.succeeded && gateway.stdout.contains("OK"), "\(gateway)")
        try #require(
            try openssl.run([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("dev.key"), "-subj",
                "/", "-out", directory.file("dev.csr"),
            ]).succeeded)
        let issued = try fleetward.run(
            ["cert", "issue", "--data", data, "--profile", "device", "--id", "SN-TPM-1", "--csr", directory.file("dev.csr"), "--out", directory.file("dev.pem")],
            environment: environment, timeout: 120)
        #expect(issued.succeeded, "\(issued)")
        let device = try openssl.run(["verify"] + chain + [directory.file("dev.pem")])
        #expect(device.succeeded && device.stdout.contains("OK"), "\(device)")
        let listed = try Tool("pkcs11-tool").run(
            ["--module", module, "--token-label", "tpm-ca", "--login", "--pin", tpm.pin, "--list-objects", "--type", "privkey"],
            environment: tpm.environment)
        #expect(listed.stdout.contains("fleetward/ca/issuing") && listed.stdout.contains("fleetward/ca/factory"), "\(listed)")

        // A device: its keys in the TPM's other token (the CSR, every handshake and the signed
        // telemetry signed by the TPM); enroll, send, take an update.
        let fixture = try ESTFixture()
        try fixture.allow(["tpm-1,\(UpdateTests.secret),,sensor,"])
        let agentDevice = try AgentTests.device(fixture, "tpm-1")
        let store = ["--key-store", "pkcs11:token=tpm-device", "--pkcs11-module", module]
        func agent(_ command: [String], _ arguments: [String] = []) throws -> Tool.Result {
            try agentDevice.agent.run(command + agentDevice.options + store + arguments, environment: pinned, timeout: 120)
        }
        let enrolled = try agent(["enroll"], ["--id", "tpm-1", "--secret", UpdateTests.secret])
        try #require(enrolled.succeeded, "\(enrolled)")
        #expect(try agent(["send"], [#"{"temperature": 19.5}"#]).succeeded)
        // tpm2-pkcs11 1.9 has no C_DeriveKey, so an encrypted image cannot be opened with a key in
        // it: refused in one line, nothing downloaded or written; a plain image installs.
        let image = try UpdateTests.firmware(fixture, "tpm-fw.img", bytes: 300_001)
        _ = try UpdateTests.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor", "--encrypt"])
        let slots = fixture.directory.file("tpm-slots")
        let refused = try agent(["update", "apply"], ["--slots", slots, "--model", "sensor"])
        UpdateTests.expectError(refused, exit: 8, containing: "cannot unwrap the image key")
        #expect(refused.stderr.contains("CKR_FUNCTION_NOT_SUPPORTED"), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: slots + "/slot-b"))
        let plain = try UpdateTests.firmware(fixture, "tpm-fw-2.img", bytes: 300_003)
        _ = try UpdateTests.publish(fixture, plain, ["--version", "1.0.1", "--model", "sensor"])
        let applied = try agent(["update", "apply"], ["--slots", slots, "--model", "sensor"])
        #expect(applied.succeeded && applied.stdout.contains("installed 1.0.1 on slot-b"), "\(applied)")
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-b", andPath: plain))
        let written = AgentTests.files(agentDevice.credentials).keys.map { String($0) }
        #expect(written.allSatisfy { !$0.hasPrefix("keys/") }, "\(written)")
    }
}
