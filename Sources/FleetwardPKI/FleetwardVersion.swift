/// The version both binaries print with `--version`.
public enum FleetwardVersion {
    public static let string = "0.20.0"
}
