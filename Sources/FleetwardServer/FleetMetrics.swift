public import FleetwardRegistry
public import Foundation
public import Prometheus
import Synchronization

/// What one running Fleetward counts, in Prometheus' text format at `GET /metrics`.
///
/// Each server has its own ``PrometheusCollectorRegistry`` (tests run many servers in one process,
/// and swift-metrics' global bootstrap may happen once per process only); ``factory`` hands the
/// same registry to swift-metrics for libraries that record through it (`serve` bootstraps it).
///
/// The hot paths (EST, gateway and MQTT handshakes) only increment counters made here at start,
/// one per label set, each an atomic add: no lock and no allocation per request. Values the
/// registry already holds (devices by state, certificates expiring, the audit log's length) are
/// read when scraped (``render(_:)``).
///
/// Names follow Prometheus' conventions: `fleetward_` first, base units (`_seconds`), `_total`
/// on counters. No label ever carries a device ID, serial or owner (one series per device would
/// grow without bound, and a scrape would list the fleet).
public final class FleetMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// The same registry as a swift-metrics factory (`MetricsSystem.bootstrap(…)`).
    public var factory: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: registry) }

    // MARK: Label values

    /// How an enrollment went: `issued`, `pending`, or why it was refused.
    public enum EnrollmentResult: String, CaseIterable, Sendable {
        case issued, pending
        case unauthenticated, forbidden
        case invalidRequest = "invalid_request"
        case tooManyRequests = "too_many_requests"
        case unavailable, error
    }

    /// `simpleenroll` or `simplereenroll` (RFC 7030 §4.2).
    public enum EnrollmentFlow: String, CaseIterable, Sendable {
        case enroll, reenroll
    }

    /// What the device proved itself with.
    public enum EnrollmentCredential: String, CaseIterable, Sendable {
        case password, certificate, none
    }

    /// Which device listener a handshake came to.
    public enum DeviceListenerKind: String, CaseIterable, Sendable {
        case gateway, mqtt
    }

    /// Why a device's certificate was refused in a handshake (a small closed set: never the
    /// certificate's serial or the device's ID).
    public enum HandshakeRefusal: String, CaseIterable, Sendable {
        case noCertificate = "no_certificate"
        case malformed
        case untrustedIssuer = "untrusted_issuer"
        case wrongProfile = "wrong_profile"
        case notYetValid = "not_yet_valid"
        case expired
        case notRegistered = "not_registered"
        case notActive = "not_active"
        case unknownCertificate = "unknown_certificate"
        case revoked
        case registryUnavailable = "registry_unavailable"
    }

    // MARK: Collectors

    private struct EnrollmentKey: Hashable {
        var flow: EnrollmentFlow
        var credential: EnrollmentCredential
        var result: EnrollmentResult
    }

    private struct HandshakeKey: Hashable {
        var listener: DeviceListenerKind
        var reason: HandshakeRefusal
    }

    // Made once at start and never changed: reading them takes no lock.
    private let enrollments: [EnrollmentKey: Counter]
    private let admitted: [DeviceListenerKind: Counter]
    private let refused: [HandshakeKey: Counter]
    private let ocspRequests: Counter
    private let crlRequests: Counter
    private let importRows: [String: Counter]
    private let updateDownloads: Counter
    private let updateReports: [String: Counter]
    private let revocationToDisconnect: ValueHistogram
    private let transactionSeconds: ValueHistogram
    /// Enrollments issued and refused since start, for the console's activity chart.
    private let issuedTotal = Atomic<Int>(0)
    private let refusedTotal = Atomic<Int>(0)
    /// Per-minute samples of those totals (``sampleActivity(at:)``), the newest last.
    private let history = Mutex<(issued: Int, refused: Int, points: [ActivityPoint])>((0, 0, []))
    /// Readings of live values (connections, sessions) by the listeners that hold them.
    private let readings = Mutex<[String: @Sendable () -> Int]>([:])

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, helpText: help)
        }
        let enrollmentHelp = descriptor(
            "fleetward_enrollments_total", "EST enrollments by flow, credential and result (issued, pending or the refusal)")
        var enrollments: [EnrollmentKey: Counter] = [:]
        for flow in EnrollmentFlow.allCases {
            for credential in EnrollmentCredential.allCases {
                for result in EnrollmentResult.allCases {
                    enrollments[EnrollmentKey(flow: flow, credential: credential, result: result)] = registry.makeCounter(
                        descriptor: enrollmentHelp,
                        labels: [("flow", flow.rawValue), ("credential", credential.rawValue), ("result", result.rawValue)])
                }
            }
        }
        self.enrollments = enrollments
        let handshakeHelp = descriptor(
            "fleetward_device_handshakes_total", "Device TLS handshakes on the gateway and the MQTT front door, admitted or refused, by reason")
        var admitted: [DeviceListenerKind: Counter] = [:]
        var refused: [HandshakeKey: Counter] = [:]
        for listener in DeviceListenerKind.allCases {
            admitted[listener] = registry.makeCounter(
                descriptor: handshakeHelp, labels: [("listener", listener.rawValue), ("result", "admitted"), ("reason", "none")])
            for reason in HandshakeRefusal.allCases {
                refused[HandshakeKey(listener: listener, reason: reason)] = registry.makeCounter(
                    descriptor: handshakeHelp, labels: [("listener", listener.rawValue), ("result", "refused"), ("reason", reason.rawValue)])
            }
        }
        self.admitted = admitted
        self.refused = refused
        ocspRequests = registry.makeCounter(descriptor: descriptor("fleetward_ocsp_requests_total", "OCSP requests answered"))
        crlRequests = registry.makeCounter(descriptor: descriptor("fleetward_crl_requests_total", "CRL downloads"))
        let importHelp = descriptor("fleetward_import_rows_total", "Allow-list rows imported through the API, by result")
        importRows = Dictionary(
            uniqueKeysWithValues: ["inserted", "duplicate", "rejected"].map {
                ($0, registry.makeCounter(descriptor: importHelp, labels: [("result", $0)]))
            })
        updateDownloads = registry.makeCounter(
            descriptor: descriptor("fleetward_update_downloads_total", "Update artifact downloads started through the gateway"))
        let reportHelp = descriptor("fleetward_update_reports_total", "Update states devices reported, by state")
        updateReports = Dictionary(
            uniqueKeysWithValues: UpdateState.allCases.map {
                ($0.rawValue, registry.makeCounter(descriptor: reportHelp, labels: [("state", $0.rawValue)]))
            })
        revocationToDisconnect = registry.makeValueHistogram(
            descriptor: descriptor(
                "fleetward_revocation_disconnect_seconds",
                "From a registry change (revoke, suspend, stolen) to the gateway closing the device's live connection"),
            buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        transactionSeconds = registry.makeValueHistogram(
            descriptor: descriptor("fleetward_registry_transaction_seconds", "Registry write transactions, from begin to commit"),
            buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
    }

    // MARK: Recording (hot paths: one atomic add each)

    public func enrollment(_ flow: EnrollmentFlow, _ credential: EnrollmentCredential, _ result: EnrollmentResult) {
        enrollments[EnrollmentKey(flow: flow, credential: credential, result: result)]?.increment()
        switch result {
        case .issued: issuedTotal.add(1, ordering: .relaxed)
        case .pending: break
        default: refusedTotal.add(1, ordering: .relaxed)
        }
    }

    public func handshakeAdmitted(_ listener: DeviceListenerKind) {
        admitted[listener]?.increment()
    }

    public func handshakeRefused(_ listener: DeviceListenerKind, _ reason: HandshakeRefusal) {
        refused[HandshakeKey(listener: listener, reason: reason)]?.increment()
    }

    public func ocspRequest() { ocspRequests.increment() }
    public func crlRequest() { crlRequests.increment() }

    public func importedRows(inserted: Int, duplicates: Int, rejected: Int) {
        importRows["inserted"]?.increment(by: Int64(inserted))
        importRows["duplicate"]?.increment(by: Int64(duplicates))
        importRows["rejected"]?.increment(by: Int64(rejected))
    }

    public func updateDownload() { updateDownloads.increment() }
    public func updateReported(_ state: UpdateState) { updateReports[state.rawValue]?.increment() }

    public func disconnected(afterChangeSeconds seconds: Double) { revocationToDisconnect.record(max(0, seconds)) }
    public func transaction(seconds: Double) { transactionSeconds.record(seconds) }

    /// Registers a live value read at each scrape, as the gauge `name` (a listener's connections).
    public func read(_ name: String, _ reading: @escaping @Sendable () -> Int) {
        readings.withLock { $0[name] = reading }
    }

    // MARK: Activity over time (the console)

    /// Enrollments issued and refused in one interval.
    public struct ActivityPoint: Sendable, Equatable {
        public var end: Date
        public var issued: Int
        public var refused: Int
    }

    /// How many intervals the history keeps (an hour of minutes).
    public static let activityPoints = 60

    /// Closes the current interval: what was issued and refused since the last sample.
    public func sampleActivity(at time: Date) {
        let issued = issuedTotal.load(ordering: .relaxed)
        let refused = refusedTotal.load(ordering: .relaxed)
        history.withLock { history in
            history.points.append(ActivityPoint(end: time, issued: issued - history.issued, refused: refused - history.refused))
            if history.points.count > Self.activityPoints { history.points.removeFirst(history.points.count - Self.activityPoints) }
            history.issued = issued
            history.refused = refused
        }
    }

    /// The sampled intervals and the one still open (ending `time`), oldest first.
    public func activity(at time: Date) -> [ActivityPoint] {
        let issued = issuedTotal.load(ordering: .relaxed)
        let refused = refusedTotal.load(ordering: .relaxed)
        return history.withLock { history in
            history.points + [ActivityPoint(end: time, issued: issued - history.issued, refused: refused - history.refused)]
        }
    }

    /// Enrollments issued and refused since the server started.
    public var enrollmentTotals: (issued: Int, refused: Int) {
        (issuedTotal.load(ordering: .relaxed), refusedTotal.load(ordering: .relaxed))
    }

    // MARK: Scrape

    /// The registry's values at scrape time.
    public struct Snapshot: Sendable {
        public var overview: FleetOverview
        public init(overview: FleetOverview) { self.overview = overview }
    }

    /// The text exposition format (version 0.0.4): the counters and histograms, then the values
    /// read now.
    public func render(_ snapshot: Snapshot) -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        var text = ""
        let overview = snapshot.overview
        text += "# HELP fleetward_devices Registered devices by lifecycle state\n# TYPE fleetward_devices gauge\n"
        for state in DeviceState.allCases {
            text += "fleetward_devices{state=\"\(state.rawValue)\"} \(overview.devicesByState[state, default: 0])\n"
        }
        text +=
            "# HELP fleetward_certificates_expiring Unrevoked certificates whose validity ends within the window, by profile\n"
            + "# TYPE fleetward_certificates_expiring gauge\n"
        for window in FleetOverview.ExpiryWindow.allCases {
            let counts = overview.expiring[window] ?? [:]
            for profile in Set(counts.keys).union(["device", "birth"]).sorted() {
                text +=
                    "fleetward_certificates_expiring{profile=\"\(Self.escapeLabel(profile))\",within=\"\(window.rawValue)\"} \(counts[profile, default: 0])\n"
            }
        }
        text +=
            "# HELP fleetward_audit_entries_total Entries appended to the audit log (by every process sharing the registry)\n"
            + "# TYPE fleetward_audit_entries_total counter\nfleetward_audit_entries_total \(overview.auditEntries)\n"
        for (name, reading) in readings.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            text += "# TYPE \(name) gauge\n\(name) \(reading())\n"
        }
        buffer.append(contentsOf: text.utf8)
        return buffer
    }

    /// A label value in the text format: backslash, double quote and newline escaped.
    static func escapeLabel(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
