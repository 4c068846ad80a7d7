import FleetwardDevice
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import SwiftASN1
import Testing
import X509

/// `fleetward release`: artifacts stored by hash, manifests signed by the release key that the
/// root certified (checked with openssl alone), and the device kit's verifier refusing every
/// tampered, stale, replayed, misdirected or wrongly signed manifest.
@Suite(.tags(.slow)) struct ReleaseTests {
    let cli: CLI
    let directory: TemporaryDirectory
    let data: String

    init() throws {
        cli = try CLI()
        directory = try TemporaryDirectory(prefix: "fleetward-release")
        data = directory.file("data")
        let made = try cli.run(["init", "--data", data, "--kdf-iterations", "10000"])
        try #require(made.succeeded, "\(made)")
    }

    func publish(_ file: String, _ arguments: [String]) throws -> [String: Any] {
        let result = try cli.run(["release", "publish", "--data", data, file, "--json"] + arguments)
        try #require(result.succeeded, "\(result)")
        return (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
    }

    func firmware(_ name: String, bytes: Int) throws -> String {
        var generator = SystemRandomNumberGenerator()
        try Data((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }).write(
            to: URL(fileURLWithPath: directory.file(name)))
        return directory.file(name)
    }

    @Test func publishStoresTheArtifactByHashAndSignsAManifestThatOpenSSLVerifies() throws {
        let image = try firmware("fw-1.img", bytes: 3 << 20)
        let first = try publish(image, ["--version", "1.0.0", "--model", "sensor-v2", "--rollout", "25", "--channel", "beta"])
        let manifest = try #require(first["manifest"] as? [String: Any])
        let artifact = try #require(manifest["artifact"] as? [String: Any])
        #expect(manifest["manifestVersion"] as? Int == 1)
        #expect(manifest["rollout"] as? Int == 25 && manifest["channel"] as? String == "beta")
        #expect(artifact["size"] as? Int == 3 << 20)
        let digest = try cli.openssl(["dgst", "-sha256", "-r", image]).stdout.split(separator: " ").first.map(String.init)
        #expect(artifact["sha256"] as? String == digest)
        let stored = try #require(first["artifactPath"] as? String)
        #expect(stored.hasSuffix("/releases/artifacts/" + (digest ?? "?")))
        #expect(FileManager.default.contentsEqual(atPath: stored, andPath: image))

        // The signer: certified by the root, code signing, Fleetward's codesign policy.
        let signer = data + "/releases/signing.pem"
        #expect(try cli.openssl(["verify", "-CAfile", data + "/ca/root.pem", signer]).stdout.contains(": OK"))
        let text = try cli.openssl(["x509", "-in", signer, "-noout", "-text"]).stdout
        #expect(
            text.contains("Code Signing") && text.contains("4589622.1.5") && text.contains("Issuer: O = Fleetward, CN = Fleetward Root CA"))
        let keyText = try String(contentsOfFile: data + "/releases/signing.key", encoding: .utf8)
        #expect(keyText.contains("BEGIN ENCRYPTED PRIVATE KEY") && !keyText.contains("BEGIN PRIVATE KEY"), "the key is encrypted")

        // The manifest's signature, checked with openssl alone; one changed byte fails.
        try directory.write("release.pub", try cli.openssl(["x509", "-in", signer, "-noout", "-pubkey"]).stdout)
        let manifestPath = try #require(first["manifestPath"] as? String)
        let signaturePath = try #require(first["signaturePath"] as? String)
        let verified = try cli.openssl.run([
            "dgst", "-sha256", "-verify", directory.file("release.pub"), "-signature", signaturePath, manifestPath,
        ])
        #expect(verified.stdout.contains("Verified OK"), "\(verified)")
        let edited = String(decoding: try Data(contentsOf: URL(fileURLWithPath: manifestPath)), as: UTF8.self)
            .replacingOccurrences(of: "\"rollout\":25", with: "\"rollout\":95")
        try directory.write("edited.json", edited)
        let refused = try cli.openssl.run([
            "dgst", "-sha256", "-verify", directory.file("release.pub"), "-signature", signaturePath, directory.file("edited.json"),
        ])
        #expect(!refused.succeeded && refused.stdout.contains("Verification failure"), "\(refused)")

        // Manifest versions only grow; halt and promote show in the list.
        let second = try publish(try firmware("fw-2.img", bytes: 1000), ["--version", "1.1.0", "--model", "sensor-v2"])
        #expect((second["manifest"] as? [String: Any])?["manifestVersion"] as? Int == 2)
        #expect(try cli.run(["release", "halt", "--data", data, "1.0.0"]).succeeded)
        let promoted = try cli.run(["release", "promote", "--data", data, "1.0.0", "--channel", "stable", "--json"])
        #expect(promoted.succeeded, "\(promoted)")
        let listed = try cli.run(["release", "list", "--data", data])
        let lines = listed.stdout.split(separator: "\n")
        #expect(lines.count == 3, "\(listed)")
        #expect(lines.first?.hasPrefix("1\t1.0.0\tbeta\t25%") == true && lines.first?.hasSuffix("halted") == true, "\(listed.stdout)")
        #expect(lines.last?.hasPrefix("3\t1.0.0\tstable") == true, "\(listed.stdout)")

        // Bad input: one line, nothing written.
        let before = try snapshot(data + "/releases")
        for (arguments, fragment) in [
            ([image, "--version", "1.1.0", "--model", "sensor-v2"], "already published"),
            ([image, "--version", "2.0.0", "--model", "sensor-v2", "--rollout", "101"], "rollout"),
            ([image, "--version", "2.0.0", "--model", "sensor-v2", "--expires", "soon"], "not a duration"),
            ([image, "--version", "2.0.0"], "Missing expected argument '--model"),
            ([image, "--version", "2.0.0 beta", "--model", "sensor-v2"], "version must be"),
            ([directory.file("missing.img"), "--version", "2.0.0", "--model", "sensor-v2"], "cannot read"),
        ] {
            cli.expectOneLineError(try cli.run(["release", "publish", "--data", data] + arguments), containing: fragment)
        }
        #expect(try snapshot(data + "/releases") == before, "a refused publish changed nothing")
    }

    @Test func theDeviceAcceptsOnlyAGenuineCurrentNewerManifestForItsModel() throws {
        let published = try publish(try firmware("fw.img", bytes: 4096), ["--version", "2.0.0", "--model", "sensor-v2", "--expires", "2h"])
        let manifest = Array(try Data(contentsOf: URL(fileURLWithPath: try #require(published["manifestPath"] as? String))))
        let signature = Array(try Data(contentsOf: URL(fileURLWithPath: try #require(published["signaturePath"] as? String))))
        let root = try Certificate(pemEncoded: String(contentsOfFile: data + "/ca/root.pem", encoding: .utf8))
        let signer = try Certificate(pemEncoded: String(contentsOfFile: data + "/releases/signing.pem", encoding: .utf8))
        let verifier = ReleaseVerifier(roots: [root])
        func refusal(
            _ bytes: [UInt8], _ signature: [UInt8], _ signer: Certificate, model: String = "sensor-v2", accepted: UInt64 = 0,
            now: Date = Date()
        ) -> String {
            do {
                _ = try verifier.verify(
                    manifest: bytes, signature: signature, signer: signer, model: model, acceptedVersion: accepted, now: now)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }

        let accepted = try verifier.verify(manifest: manifest, signature: signature, signer: signer, model: "sensor-v2", acceptedVersion: 0)
        #expect(accepted.version == "2.0.0" && accepted.manifestVersion == 1 && accepted.artifact.size == 4096)
        #expect(ReleaseVerifier.artifactMatches(accepted, size: 4096, sha256: accepted.artifact.sha256))
        #expect(!ReleaseVerifier.artifactMatches(accepted, size: 4095, sha256: accepted.artifact.sha256))
        #expect(refusal(manifest, signature, signer, accepted: 1).contains("not newer"), "the same manifest again")
        #expect(refusal(manifest, signature, signer, model: "camera-v1").contains("not camera-v1"))
        #expect(refusal(manifest, signature, signer, now: Date().addingTimeInterval(3 * 3600)).contains("expired"))
        var edited = manifest
        edited[edited.count / 2] ^= 0x01
        #expect(refusal(edited, signature, signer).contains("signature does not verify"))

        // The same bytes signed by other keys and roles, made with openssl.
        let dir = directory
        for role in ["issuing", "root"] {
            try cli.openssl([
                "pkey", "-in", data + "/ca/\(role).key", "-passin", "pass:" + CLI.passphrase, "-out", dir.file("\(role)-plain.key"),
            ])
        }
        try dir.write("manifest.json", String(decoding: manifest, as: UTF8.self))
        try dir.write(
            "codesign.ext", "extendedKeyUsage = codeSigning\nkeyUsage = critical, digitalSignature\nbasicConstraints = critical, CA:FALSE\n"
        )
        /// A key and a codeSigning certificate for it signed by `ca`'s key, and the manifest signed by that key.
        func forged(_ name: String, by ca: String) throws -> (Certificate, [UInt8]) {
            try cli.openssl([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("\(name).key"),
                "-subj", "/CN=\(name)", "-out", dir.file("\(name).csr"),
            ])
            try cli.openssl([
                "x509", "-req", "-in", dir.file("\(name).csr"), "-CA", data + "/ca/\(ca).pem", "-CAkey", dir.file("\(ca)-plain.key"),
                "-CAcreateserial", "-days", "30", "-extfile", dir.file("codesign.ext"), "-out", dir.file("\(name).pem"),
            ])
            try cli.openssl([
                "dgst", "-sha256", "-sign", dir.file("\(name).key"), "-out", dir.file("\(name).sig"), dir.file("manifest.json"),
            ])
            return (
                try Certificate(pemEncoded: String(contentsOfFile: dir.file("\(name).pem"), encoding: .utf8)),
                Array(try Data(contentsOf: URL(fileURLWithPath: dir.file("\(name).sig"))))
            )
        }
        let (byIssuing, issuingSignature) = try forged("issued-signer", by: "issuing")
        #expect(refusal(manifest, issuingSignature, byIssuing).contains("not certified by the pinned root"), "signed under the issuing CA")
        let (byRoot, rootSignature) = try forged("root-signer", by: "root")
        #expect(
            refusal(manifest, rootSignature, byRoot).contains("not signed by a release signing (codesign) certificate"),
            "no codesign profile")
        #expect(
            refusal(manifest, rootSignature, signer).contains("signature does not verify"), "the genuine signer, another key's signature")
        // A device's own certificate and key cannot sign a release either.
        let device = try GatewayDeviceKey.make(cli: cli, directory: dir, data: data)
        try cli.openssl(["dgst", "-sha256", "-sign", device.key, "-out", dir.file("device.sig"), dir.file("manifest.json")])
        let deviceSignature = Array(try Data(contentsOf: URL(fileURLWithPath: dir.file("device.sig"))))
        #expect(refusal(manifest, deviceSignature, device.certificate).contains("not certified by the pinned root"))
    }
}

/// A device certificate from the issuing CA (`fleetward cert issue`), with its key file.
enum GatewayDeviceKey {
    static func make(cli: CLI, directory: TemporaryDirectory, data: String) throws -> (certificate: Certificate, key: String) {
        try cli.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("device.key"),
            "-subj", "/CN=rel-device", "-out", directory.file("device.csr"),
        ])
        let issued = try cli.run([
            "cert", "issue", "--data", data, "--profile", "device", "--id", "rel-device", "--csr", directory.file("device.csr"), "--out",
            directory.file("device.pem"),
        ])
        #expect(issued.succeeded, "\(issued)")
        return (
            try Certificate(pemEncoded: String(contentsOfFile: directory.file("device.pem"), encoding: .utf8)), directory.file("device.key")
        )
    }
}
