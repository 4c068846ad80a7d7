import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation
import Crypto
import SwiftASN1
import X509

/// `fleetward release`: signed over-the-air updates, publishing side.
struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Publish signed updates: artifacts stored by hash, manifests signed by the release key (codesign, under the root).",
        subcommands: [Publish.self, List.self, Promote.self, Halt.self, Status.self]
    )

    static func signer(_ dataOptions: DataOptions) async throws -> (ReleaseRepository, SigningKey, Passphrase) {
        let directory = dataOptions.directory
        let hierarchy = try CAHierarchy.load(from: directory)
        let passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
        let custodian = try hierarchy.custodian(passphrase: passphrase)
        let authority = CertificateAuthority(hierarchy: hierarchy, custodian: custodian)
        let repository = ReleaseRepository(directory: directory)
        let (key, certificate, made) = try repository.signer(authority: authority, custodian: custodian)
        let store = try await RegistryAccess.openStore(directory, databaseURL: dataOptions.databaseURL)
        if !made, try await store.certificate(serial: certificate.serialNumber.hexString)?.revocation != nil {
            throw ValidationError(
                "the release signing certificate \(certificate.serialNumber.hexString) is revoked: nothing is signed with its key")
        }
        if made {
            // On record like every certificate, so `cert revoke` can revoke it (root CRL).
            let now = Date()
            let der = try DERBytesOf.certificate(certificate)
            try await dataOptions.openRegistrar(passphrase: passphrase).registrar.recordCertificates(
                [CertificateRecord(
                    serial: certificate.serialNumber.hexString, deviceID: nil,
                    profile: CertificateProfile.codesign.rawValue, owner: nil, notBefore: certificate.notValidBefore,
                    notAfter: certificate.notValidAfter, sha256: SHA256.hash(data: der).hexString, issuedAt: now)],
                by: .console, at: now)
            Output.progress("Made the release signing key (codesign, under the root): \(repository.signingCertificatePath)")
        }
        return (repository, key, passphrase)
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store FILE by its SHA-256 and write its signed manifest (the next manifest version).")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Argument(help: "The artifact (firmware image).")
        var file: String

        @Option(help: "The release's version, e.g. 1.4.0.")
        var version: String

        @Option(help: ArgumentHelp("A device model it is for (repeatable; at least one).", valueName: "model"))
        var model: [String]

        @Option(help: "The channel, e.g. stable or beta.")
        var channel = "stable"

        @Option(help: ArgumentHelp("The share of the fleet offered it, 0 to 100.", valueName: "percent"))
        var rollout = 100

        @Option(help: ArgumentHelp("How long the manifest is valid: 90d, 12h (1 h to 366 d; default 90 d).", valueName: "duration"))
        var expires = "90d"

        @Flag(help: "Sign it as a downgrade: devices running a newer version take it (they refuse older releases otherwise).")
        var downgrade = false

        @Flag(
            help: """
                Encrypt the image (AES-256-GCM in 64 KiB chunks, a new random key): only the ciphertext is stored and served; \
                each device gets the key wrapped to its own certificate's key (HPKE) and decrypts into its inactive slot.
                """)
        var encrypt = false

        func run() async throws {
            let lifetime = try LifetimeParser.seconds(expires)
            let (repository, key, passphrase) = try await ReleaseCommand.signer(dataOptions)
            let seal = encrypt ? try repository.openContentKeySeal(passphrase: passphrase, create: true) : nil
            let showProgress = !output.json && isatty(STDERR_FILENO) == 1
            let release = try repository.publish(
                file: file, version: version, models: model, channel: channel, rollout: rollout, lifetime: lifetime, downgrade: downgrade,
                key: key, encryptUnder: seal
            ) { done, total in
                guard showProgress else { return }
                FileHandle.standardError.write(Data("\r  \(seal == nil ? "storing" : "encrypting") \(done >> 20)/\(total >> 20) MiB…".utf8))
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
            if output.json {
                try Output.printJSON(ReleaseReport(release))
            } else {
                print(
                    "Published \(release.manifest.version) as manifest \(release.manifest.manifestVersion) for "
                        + "\(release.manifest.models.joined(separator: ", ")) on \(release.manifest.channel) "
                        + "(\(release.manifest.rollout) %, until \(ISO8601DateFormatter().string(from: release.manifest.expires))): "
                        + "artifact \(release.manifest.artifact.sha256), \(release.manifest.artifact.size) bytes"
                        + (release.manifest.encryption.map { " (encrypted; image \($0.plaintext.sha256), \($0.plaintext.size) bytes)" } ?? "")
                        + "\n"
                        + "  manifest  \(release.manifestPath)\n  signature \(release.signaturePath)\n"
                        + "  signed by \(repository.signingCertificatePath)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every published manifest, oldest first.")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            // Like every other command, say so when there is no CA here rather than list nothing.
            _ = try CAHierarchy.load(from: dataOptions.directory)
            let releases = try ReleaseRepository(directory: dataOptions.directory).list()
            if output.json { return try Output.printJSON(releases.map(ReleaseReport.init)) }
            if releases.isEmpty { return print("No releases published.") }
            for release in releases {
                let manifest = release.manifest
                print(
                    "\(manifest.manifestVersion)\t\(manifest.version)\t\(manifest.channel)\t\(manifest.rollout)%\t"
                        + "\(manifest.models.joined(separator: ","))\t\(manifest.artifact.sha256.prefix(12))…\t"
                        + (release.halted ? "halted" : (manifest.expires < Date() ? "expired" : "offered")))
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-sign a release for another channel or rollout share (a new manifest version).",
            discussion: """
                What is not given stays as it was: --rollout 100 widens the rollout on the same channel. With \
                neither option the release is re-signed as it is, renewing its validity.
                """)

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Argument(help: "The release's version.")
        var version: String

        @Option(help: ArgumentHelp("The channel to offer it on (default: unchanged).", valueName: "channel"))
        var channel: String?

        @Option(help: ArgumentHelp("The new share of the fleet, 0 to 100 (default: unchanged).", valueName: "percent"))
        var rollout: Int?

        func run() async throws {
            let (repository, key, _) = try await ReleaseCommand.signer(dataOptions)
            let release = try repository.promote(version: version, to: channel, rollout: rollout, key: key)
            if output.json { return try Output.printJSON(ReleaseReport(release)) }
            print(
                "Promoted \(version) on \(release.manifest.channel) at \(release.manifest.rollout)% as manifest "
                    + "\(release.manifest.manifestVersion): \(release.manifestPath)")
        }
    }

    struct Halt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop offering a release to more devices.")

        @OptionGroup var dataOptions: DataOptions

        @Argument(help: "The release's version.")
        var version: String

        func run() async throws {
            _ = try CAHierarchy.load(from: dataOptions.directory)
            try ReleaseRepository(directory: dataOptions.directory).halt(version: version)
            print("Halted \(version): no more devices will be offered it.")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "How many devices were offered a release, downloaded, installed, failed or rolled back.")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Argument(help: "The release's version.")
        var version: String

        func run() async throws {
            _ = try CAHierarchy.load(from: dataOptions.directory)
            let releases = try ReleaseRepository(directory: dataOptions.directory).list().filter { $0.manifest.version == version }
            guard let latest = releases.last else { throw ValidationError("no release \(version)") }
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            let counts = try await store.updateCounts(version: version)
            var byState: [String: Int] = [:]
            for state in UpdateState.allCases { byState[state.rawValue] = counts[state] ?? 0 }
            if output.json {
                struct Report: Encodable {
                    var version: String
                    var halted: Bool
                    var devices: [String: Int]
                }
                return try Output.printJSON(Report(version: version, halted: latest.halted, devices: byState))
            }
            print("Release \(version)\(latest.halted ? " (halted)" : ""):")
            for state in UpdateState.allCases {
                print("  \(state.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) \(byState[state.rawValue] ?? 0)")
            }
        }
    }

    struct ReleaseReport: Encodable {
        var manifest: ReleaseManifest
        var halted: Bool
        var manifestPath: String
        var signaturePath: String
        var artifactPath: String

        init(_ release: PublishedRelease) {
            manifest = release.manifest
            halted = release.halted
            manifestPath = release.manifestPath
            signaturePath = release.signaturePath
            artifactPath = release.artifactPath
        }
    }
}

/// DER of a parsed certificate and its SHA-256.
enum DERBytesOf {
    static func certificate(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}
