public import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Why a device-side call failed, in one sentence a field technician can act on.
public struct DeviceError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// No TCP connection: nothing listening, no route, or the connect timed out.
        public static let unreachable = Code(name: "unreachable")
        /// The server's certificate does not chain to the pinned root, or is not for the server's name.
        public static let untrustedServer = Code(name: "untrusted-server")
        /// The server ended the TLS handshake: it did not accept this device's certificate.
        public static let handshakeRefused = Code(name: "handshake-refused")
        /// The server answered with an error status (see ``DeviceError/status``).
        public static let refused = Code(name: "refused")
        /// The answer was not what the protocol says.
        public static let malformedResponse = Code(name: "malformed-response")
        /// No complete answer in time.
        public static let timeout = Code(name: "timeout")
        /// A local input (key, certificate, configuration) is unusable.
        public static let invalidInput = Code(name: "invalid-input")
        /// The sealed credential store cannot be opened (altered, truncated, or another device-unique key).
        public static let sealedStore = Code(name: "sealed-store")
        /// The server holds the enrollment until an operator approves it (202).
        public static let pending = Code(name: "pending")
        /// The device holds no credential for this yet (enroll first).
        public static let notEnrolled = Code(name: "not-enrolled")
        /// An update the device refused: its manifest (signer, signature, expiry, version, model) or
        /// its artifact (size, hash) is not what the fleet's release key signed for this device.
        public static let updateRejected = Code(name: "update-rejected")
        /// An update was installed and switched to, its health check failed, and the device switched back.
        public static let rolledBack = Code(name: "rolled-back")
        /// A local file (slot, download) cannot be read or written.
        public static let storage = Code(name: "storage")

        public var description: String { name }
    }

    public var code: Code
    public var message: String
    /// The HTTP status, for ``Code/refused``.
    public var status: Int?

    public init(_ code: Code, _ message: String, status: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String { message }

    /// Errors are equal when their codes are (tests match on the kind, not the sentence).
    public static func == (lhs: DeviceError, rhs: DeviceError) -> Bool { lhs.code == rhs.code }

    /// Names a connection failure for `endpoint`: unreachable, untrusted server, refused handshake.
    static func classify(_ error: any Error, endpoint: String, serverName: String?) -> DeviceError {
        if let error = error as? DeviceError { return error }
        let text = String(describing: error)
        if let mismatch = error as? ServerNameMismatch {
            let carried = mismatch.carried.isEmpty ? "no name" : mismatch.carried.joined(separator: ", ")
            return DeviceError(
                .untrustedServer,
                "the server at \(endpoint) presented a certificate for \(carried), not for \(serverName ?? endpoint) "
                    + "(the provisioning file's server name; 'fleetward provisioning-config --server-name' sets it)")
        }
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return DeviceError(
                .untrustedServer, "the server at \(endpoint) presented a certificate that is not for \(serverName ?? endpoint)")
        }
        if error is NIOSSLError || error is BoringSSLError {
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return DeviceError(
                    .untrustedServer, "the server at \(endpoint) is not trusted: its certificate does not chain to the pinned root")
            }
            if text.contains("ALERT") || text.contains("alert") {
                return DeviceError(.handshakeRefused, "the server at \(endpoint) refused the TLS handshake (\(alertName(text)))")
            }
            return DeviceError(.malformedResponse, "TLS with \(endpoint) failed: \(text.prefix(200))")
        }
        if error is NIOConnectionError || error is IOError || error is ChannelError {
            if case ChannelError.connectTimeout = error {
                return DeviceError(.unreachable, "cannot reach \(endpoint): the connection timed out")
            }
            if let io = error as? IOError, io.errnoCode == ECONNREFUSED {
                return DeviceError(.unreachable, "cannot reach \(endpoint): connection refused")
            }
            if text.contains("onnection refused") {
                return DeviceError(.unreachable, "cannot reach \(endpoint): connection refused")
            }
            return DeviceError(.unreachable, "cannot reach \(endpoint): \(text.prefix(200))")
        }
        return DeviceError(.malformedResponse, "the exchange with \(endpoint) failed: \(text.prefix(200))")
    }

    /// `SSLV3_ALERT_CERTIFICATE_REVOKED` → `certificate revoked`.
    static func alertName(_ text: String) -> String {
        guard let range = text.range(of: #"(SSLV3|TLSV1)_ALERT_[A-Z_]+"#, options: .regularExpression) else { return "alert" }
        let name = text[range].split(separator: "_").dropFirst(2).joined(separator: " ").lowercased()
        return name.isEmpty ? "alert" : name
    }
}
