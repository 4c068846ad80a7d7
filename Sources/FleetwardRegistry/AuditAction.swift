public import FleetwardPKI

/// Every kind of change the audit log records, by the name it records (`device.suspend`,
/// `token.create`…). The names are part of the log's format: never rename one.
public enum AuditAction: String, Sendable, CaseIterable, CustomStringConvertible {
    case deviceCreate = "device.create"
    case devicesImport = "devices.import"
    case deviceEnroll = "device.enroll"
    case deviceApprove = "device.approve"
    case deviceSuspend = "device.suspend"
    case deviceResume = "device.resume"
    case deviceRevoke = "device.revoke"
    case deviceReportStolen = "device.report-stolen"
    case deviceRecover = "device.recover"
    case deviceTransfer = "device.transfer"
    case deviceClaim = "device.claim"
    case deviceClaimCode = "device.claim-code"
    case deviceClaimCodeRotate = "device.claim-code-rotate"
    case deviceEnrollmentToken = "device.enrollment-token"
    case enrollmentTokenRedeem = "enrollment-token.redeem"
    case ownerCreate = "owner.create"
    case tokenCreate = "token.create"
    case tokenRevoke = "token.revoke"
    case groupCreate = "group.create"
    case groupDelete = "group.delete"
    case mqttPolicySet = "mqtt-policy.set"
    case mqttPolicyDelete = "mqtt-policy.delete"
    case certificateIssue = "certificate.issue"
    case certificateRevoke = "certificate.revoke"

    /// The action recording lifecycle `event`.
    public static func lifecycle(_ event: LifecycleStateMachine.Event) -> AuditAction {
        switch event {
        case .activate: .deviceEnroll
        case .approve: .deviceApprove
        case .suspend: .deviceSuspend
        case .resume: .deviceResume
        case .revoke: .deviceRevoke
        case .reportStolen: .deviceReportStolen
        case .recover: .deviceRecover
        }
    }

    public var description: String { rawValue }
}

/// What an audit entry is about: `device:ID`, `certificate:SERIAL`… The gateway follows the log by
/// these names.
public enum AuditTarget: Sendable, Equatable, CustomStringConvertible {
    case device(DeviceID)
    case certificate(serial: String)
    case owner(String)
    case token(id: String)
    case group(id: String)
    case allowList(source: String)
    case mqttPolicy(MQTTPolicyScope)

    public var description: String {
        switch self {
        case .device(let id): "device:\(id)"
        case .certificate(let serial): "certificate:\(serial)"
        case .owner(let id): "owner:\(id)"
        case .token(let id): "token:\(id)"
        case .group(let id): "group:\(id)"
        case .allowList(let source): "allow-list:\(source)"
        case .mqttPolicy(let scope): "mqtt-policy:\(scope)"
        }
    }
}
