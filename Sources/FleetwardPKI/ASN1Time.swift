import Foundation

/// Encodes dates as RFC 5280 Time values without Foundation's calendar machinery.
///
/// RFC 5280 §4.1.2.5: dates through 2049 are UTCTime, from 2050 GeneralizedTime, both in UTC
/// with seconds and no fractions.
enum ASN1Time {
    /// The DER TLV of `date` as GeneralizedTime whatever the year (OCSP, RFC 6960 §4.2.1).
    static func generalizedDER(_ date: Date) -> [UInt8] {
        der(date, forceGeneralized: true)
    }

    /// The DER TLV of `date` as Time.
    static func der(_ date: Date, forceGeneralized: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(17)
        write(date, forceGeneralized: forceGeneralized, into: &out)
        return out
    }

    /// Appends the DER TLV of `date` as Time: UTCTime for 1950–2049, GeneralizedTime otherwise.
    static func write(_ date: Date, forceGeneralized: Bool, into out: inout [UInt8]) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        var days = seconds / 86_400
        var rem = seconds % 86_400
        if rem < 0 {
            rem += 86_400
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        let hour = Int(rem / 3600), minute = Int(rem % 3600 / 60), second = Int(rem % 60)
        if !forceGeneralized, (1950...2049).contains(year) {
            out.append(0x17)  // UTCTime
            out.append(13)
            append2(&out, year % 100)
        } else {
            out.append(0x18)  // GeneralizedTime
            out.append(15)
            append2(&out, year / 100)
            append2(&out, year % 100)
        }
        append2(&out, month)
        append2(&out, day)
        append2(&out, hour)
        append2(&out, minute)
        append2(&out, second)
        out.append(UInt8(ascii: "Z"))
    }

    private static func append2(_ out: inout [UInt8], _ value: Int) {
        out.append(UInt8(48 + value / 10))
        out.append(UInt8(48 + value % 10))
    }

    /// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    static func civil(fromDays z0: Int64) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(m <= 2 ? y + 1 : y), Int(m), Int(d))
    }
}
