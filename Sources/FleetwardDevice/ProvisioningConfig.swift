public import Foundation
import FleetwardPKI
import SwiftASN1
public import X509

/// What a device is programmed with at build or factory time: where its Fleetward servers are and
/// the one root it trusts for them. A JSON file, written by `fleetward provisioning-config`:
///
/// ```json
/// {"est": "127.0.0.1:8443", "gateway": "127.0.0.1:9443", "serverName": "localhost",
///  "root": "-----BEGIN CERTIFICATE-----\n…"}
/// ```
///
/// `serverName` is the name the servers' certificates must carry (omitted: the host connected to,
/// an IP address checked as an address).
public struct ProvisioningConfig: Sendable, Codable, Equatable {
    public var est: String
    public var gateway: String
    public var serverName: String?
    /// The pinned Fleetward root, PEM.
    public var root: String
    /// The MQTT front door, `HOST:PORT` (omitted: the gateway's host, port 8883).
    public var mqtt: String?

    public init(est: String, gateway: String, serverName: String? = nil, root: String, mqtt: String? = nil) {
        self.est = est
        self.gateway = gateway
        self.serverName = serverName
        self.root = root
        self.mqtt = mqtt
    }

    /// Reads and checks a provisioning file.
    ///
    /// - Throws: ``DeviceError`` `.invalidInput` naming what is wrong.
    public static func load(path: String) throws -> ProvisioningConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DeviceError(.invalidInput, "the provisioning file \(path) does not exist or cannot be read")
        }
        let config: ProvisioningConfig
        do {
            config = try JSONDecoder().decode(ProvisioningConfig.self, from: data)
        } catch {
            throw DeviceError(.invalidInput, "the provisioning file \(path) is not valid: it needs est, gateway and root (\(error))")
        }
        _ = try config.estEndpoint
        _ = try config.gatewayEndpoint
        _ = try config.mqttEndpoint
        _ = try config.roots
        return config
    }

    /// The pinned root(s), parsed.
    public var roots: [Certificate] {
        get throws {
            let blocks: [PEM.Block]
            do {
                blocks = try PEM.decodeAll(root).filter { $0.label == "CERTIFICATE" }
            } catch {
                throw DeviceError(.invalidInput, "the pinned root in the provisioning file is not PEM: \(error)")
            }
            guard !blocks.isEmpty else { throw DeviceError(.invalidInput, "the provisioning file pins no root certificate") }
            do {
                return try blocks.map { try Certificate(derEncoded: $0.der) }
            } catch {
                throw DeviceError(.invalidInput, "the pinned root in the provisioning file is not a certificate: \(error)")
            }
        }
    }

    public var estEndpoint: Endpoint { get throws { try Endpoint(est, what: "est") } }
    public var gatewayEndpoint: Endpoint { get throws { try Endpoint(gateway, what: "gateway") } }
    public var mqttEndpoint: Endpoint {
        get throws {
            if let mqtt { return try Endpoint(mqtt, what: "mqtt") }
            return Endpoint(host: try gatewayEndpoint.host, port: 8883)
        }
    }

    /// The EST client for this configuration.
    public func estClient() throws -> ESTClient {
        let endpoint = try estEndpoint
        return ESTClient(host: endpoint.host, port: endpoint.port, roots: try roots, serverName: serverName)
    }

    /// `HOST:PORT` or `[IPv6]:PORT`.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        init(_ text: String, what: String) throws {
            let bad = DeviceError(.invalidInput, "\(what) must be HOST:PORT, not '\(text)'")
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
            else { throw bad }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw bad }
            self.host = host
            self.port = port
        }

        public var description: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
    }
}
