import FleetwardRegistry
import Foundation

/// HTML for the console: every value from the registry goes through ``escape(_:)`` (device
/// metadata, models, owners and audit details come from factories and devices, so they are
/// treated as hostile), pages share one layout with no inline script or style (the
/// Content-Security-Policy forbids both), and charts are SVG drawn here.
enum ConsoleHTML {
    /// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in double-quoted attributes.
    static func escape(_ text: some StringProtocol) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default:
                // Control characters other than tab and newline are shown as U+FFFD.
                if character.value < 0x20, character != "\t", character != "\n" {
                    escaped += "\u{FFFD}"
                } else {
                    escaped.unicodeScalars.append(character)
                }
            }
        }
        return escaped
    }

    /// A query or path component, percent-encoded (then escaped where it lands in an attribute).
    static func component(_ text: some StringProtocol) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return String(text).addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    static func date(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC")
    }

    /// The page around `body`: navigation for `actor`'s role, the sign-out form.
    static func page(title: String, actor: Actor?, csrf: String?, active: String = "", _ body: String) -> String {
        var navigation = ""
        if let actor {
            var links: [(String, String, String)] = []
            if actor.role != .owner { links.append(("overview", "/console/", "Overview")) }
            links.append(("devices", "/console/devices", "Devices"))
            if [.admin, .manufacturer, .operator].contains(actor.role) { links.append(("groups", "/console/groups", "Enrollment groups")) }
            if [.admin, .operator].contains(actor.role) {
                links.append(("releases", "/console/releases", "Releases"))
                links.append(("audit", "/console/audit", "Audit log"))
                links.append(("security", "/console/security-events", "Security events"))
            }
            navigation = "<nav><span class=\"brand\">Fleetward</span>"
            for (key, href, label) in links {
                navigation += "<a href=\"\(href)\"\(key == active ? " class=\"active\"" : "")>\(label)</a>"
            }
            navigation +=
                "<form method=\"post\" action=\"/console/sign-out\" class=\"sign-out\"><input type=\"hidden\" name=\"csrf\" value=\"\(escape(csrf ?? ""))\">"
                + "<span class=\"who\" id=\"who\">\(escape(actor.role.rawValue))\(actor.owner.map { " · " + escape($0) } ?? "")</span>"
                + "<button type=\"submit\">Sign out</button></form></nav>"
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title)) · Fleetward</title>
            <link rel="stylesheet" href="/console/static/console.css">
            <script src="/console/static/console.js" defer></script>
            </head><body>\(navigation)<main><h1>\(escape(title))</h1>
            \(body)
            </main></body></html>
            """
    }

    /// A hidden CSRF field for a form.
    static func csrfField(_ csrf: String) -> String { "<input type=\"hidden\" name=\"csrf\" value=\"\(escape(csrf))\">" }

    // MARK: Charts (SVG, drawn on the server)

    static let stateColours: [DeviceState: String] = [
        .allowed: "#8aa4c8", .pending: "#e0b341", .active: "#3c9d5d", .suspended: "#d9822b", .revoked: "#7a7a7a", .stolen: "#c23b3b",
    ]

    /// Horizontal bars, one per row, labelled with their value.
    static func barChart(_ rows: [(label: String, value: Int, colour: String, id: String)], width: Int = 560) -> String {
        let rowHeight = 26
        let height = rows.count * rowHeight + 8
        let labelWidth = 110
        let maximum = max(1, rows.map(\.value).max() ?? 1)
        var svg = "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 \(width) \(height)\" width=\"\(width)\" height=\"\(height)\">"
        for (index, row) in rows.enumerated() {
            let y = 4 + index * rowHeight
            let barWidth = row.value == 0 ? 0 : max(2, Int(Double(width - labelWidth - 90) * Double(row.value) / Double(maximum)))
            svg += "<text x=\"0\" y=\"\(y + 17)\" class=\"label\">\(escape(row.label))</text>"
            svg += "<rect x=\"\(labelWidth)\" y=\"\(y + 3)\" width=\"\(barWidth)\" height=\"\(rowHeight - 8)\" fill=\"\(row.colour)\"></rect>"
            svg += "<text x=\"\(labelWidth + barWidth + 6)\" y=\"\(y + 17)\" class=\"value\" id=\"\(escape(row.id))\">\(row.value)</text>"
        }
        return svg + "</svg>"
    }

    /// Paired columns per interval: issued (green) and refused (red).
    static func activityChart(_ points: [FleetMetrics.ActivityPoint], width: Int = 560, height: Int = 160) -> String {
        let maximum = max(1, points.map { max($0.issued, $0.refused) }.max() ?? 1)
        let slots = max(points.count, 12)
        let slot = Double(width - 40) / Double(slots)
        let plot = Double(height - 30)
        var svg = "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 \(width) \(height)\" width=\"\(width)\" height=\"\(height)\">"
        svg += "<line x1=\"36\" y1=\"\(Int(plot) + 4)\" x2=\"\(width)\" y2=\"\(Int(plot) + 4)\" stroke=\"#999\"></line>"
        svg += "<text x=\"0\" y=\"14\" class=\"label\">\(maximum)</text><text x=\"0\" y=\"\(Int(plot) + 4)\" class=\"label\">0</text>"
        let offset = slots - points.count
        for (index, point) in points.enumerated() {
            let x = 40 + Double(index + offset) * slot
            let issuedHeight = plot * Double(point.issued) / Double(maximum)
            let refusedHeight = plot * Double(point.refused) / Double(maximum)
            let bar = max(1, slot / 2 - 1)
            svg += "<rect x=\"\(format(x))\" y=\"\(format(plot + 4 - issuedHeight))\" width=\"\(format(bar))\" height=\"\(format(issuedHeight))\" fill=\"#3c9d5d\"><title>\(point.issued) issued</title></rect>"
            svg += "<rect x=\"\(format(x + bar))\" y=\"\(format(plot + 4 - refusedHeight))\" width=\"\(format(bar))\" height=\"\(format(refusedHeight))\" fill=\"#c23b3b\"><title>\(point.refused) refused</title></rect>"
        }
        svg += "<text x=\"40\" y=\"\(height - 4)\" class=\"label\">one bar pair per minute, the last hour; the rightmost is the minute in progress</text>"
        return svg + "</svg>"
    }

    private static func format(_ value: Double) -> String { String(format: "%.1f", value) }
}
