// swift-tools-version:6.1
import Foundation
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "fleetward",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fleetward", targets: ["FleetwardCLI"]),
        .executable(name: "fleetward-agent", targets: ["FleetwardAgentCLI"]),
        .executable(name: "fleetward-bench", targets: ["FleetwardBench"]),
        .library(name: "FleetwardPKI", targets: ["FleetwardPKI"]),
        .library(name: "FleetwardKeyCustody", targets: ["FleetwardKeyCustody"]),
        .library(name: "FleetwardAuthority", targets: ["FleetwardAuthority"]),
        .library(name: "FleetwardDevice", targets: ["FleetwardDevice"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        // Only for its bundled SQLite (module VaporCSQLite): no system library needed.
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // Pure values and functions: profiles, CSR checks, issuance, serials, PBES2, PEM/DER. No I/O.
        .target(
            name: "FleetwardPKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // MQTT 3.1.1 and 5.0: frames, the packets policy needs, topic filters, policies and the
        // session state machine of the front door. No I/O beyond NIO's codec protocols.
        .target(
            name: "FleetwardMQTT",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        // Where private keys live: encrypted PKCS#8 files written atomically with 0600.
        .target(
            name: "FleetwardKeyCustody",
            dependencies: [
                "FleetwardPKI", "FleetwardPKCS11",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strictSettings
        ),
        // PKCS#11 (the standard header, vendored from p11-kit) and the few calls Fleetward makes
        // through a module loaded with dlopen.
        .target(name: "CPKCS11", linkerSettings: [.linkedLibrary("dl")]),
        // Keys inside a PKCS#11 token (an HSM, SoftHSM2, tpm2-pkcs11, a secure element):
        // generated there, non-extractable, signing there.
        .target(
            name: "FleetwardPKCS11",
            dependencies: ["CPKCS11", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSettings
        ),
        // Devices, lifecycle, tokens, audit chain, the RegistryStore protocol. No I/O.
        .target(
            name: "FleetwardRegistry",
            dependencies: [
                "FleetwardPKI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // The embedded registry store on SQLite.
        .target(
            name: "FleetwardRegistrySQLite",
            dependencies: [
                "FleetwardRegistry",
                "FleetwardPKI",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // The registry store on PostgreSQL, for several nodes sharing one database.
        .target(
            name: "FleetwardRegistryPostgres",
            dependencies: [
                "FleetwardRegistry",
                "FleetwardPKI",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // Use cases over the CA: create the hierarchy, load it, issue.
        .target(
            name: "FleetwardAuthority",
            dependencies: [
                "FleetwardPKI",
                "FleetwardKeyCustody",
                "FleetwardRegistry",
                "FleetwardRegistrySQLite",
                "FleetwardRegistryPostgres",
                "FleetwardMQTT",
                "FleetwardPKCS11",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The listeners: the management API (HTTP, loopback by default).
        .target(
            name: "FleetwardServer",
            dependencies: [
                "FleetwardPKI",
                "FleetwardMQTT",
                "FleetwardKeyCustody",
                "FleetwardRegistry",
                "FleetwardAuthority",
                "FleetwardDevice",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The management API's OpenAPI document, the source of truth, compiled into the binary.
            // The console's stylesheet and script, compiled in too: nothing to install or fetch.
            resources: [
                .embedInCode("Resources/openapi.json"), .embedInCode("Resources/console.css"), .embedInCode("Resources/console.js"),
            ],
            swiftSettings: strictSettings
        ),
        // The device kit: what device makers link into their firmware (EST client, pinned TLS).
        .target(
            name: "FleetwardDevice",
            dependencies: [
                "FleetwardPKI",
                "FleetwardKeyCustody",
                "FleetwardMQTT",
                "FleetwardPKCS11",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "FleetwardCLI",
            dependencies: [
                "FleetwardPKI",
                "FleetwardKeyCustody",
                "FleetwardPKCS11",
                "FleetwardAuthority",
                "FleetwardRegistry",
                "FleetwardServer",
                "FleetwardDevice",
                "FleetwardMQTT",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // fleetward-agent: the device agent and the fleet simulator, over the device kit only.
        .executableTarget(
            name: "FleetwardAgentCLI",
            dependencies: [
                "FleetwardDevice",
                "FleetwardPKI",
                "FleetwardMQTT",
                "FleetwardPKCS11",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "FleetwardBench",
            dependencies: [
                "FleetwardPKI", "FleetwardKeyCustody", "FleetwardPKCS11",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "FleetwardTestSupport",
            dependencies: [
                "FleetwardPKI",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardMQTTTests",
            dependencies: ["FleetwardMQTT", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardPKITests",
            dependencies: [
                "FleetwardPKI", "FleetwardTestSupport",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardPKCS11Tests",
            dependencies: [
                "FleetwardPKCS11", "FleetwardTestSupport", "FleetwardDevice", "FleetwardPKI",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardKeyCustodyTests",
            dependencies: [
                "FleetwardKeyCustody", "FleetwardPKI", "FleetwardTestSupport",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardAuthorityTests",
            dependencies: [
                "FleetwardAuthority", "FleetwardKeyCustody", "FleetwardPKI", "FleetwardTestSupport", "FleetwardMQTT", "FleetwardRegistry",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardRegistryTests",
            dependencies: [
                "FleetwardRegistry", "FleetwardRegistrySQLite", "FleetwardRegistryPostgres", "FleetwardPKI", "FleetwardTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardServerTests",
            dependencies: [
                "FleetwardServer", "FleetwardAuthority", "FleetwardRegistry", "FleetwardRegistrySQLite", "FleetwardKeyCustody", "FleetwardPKI",
                "FleetwardTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Run by path with python3, not bundled.
            exclude: ["Fixtures/check_answers.py"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardDeviceTests",
            dependencies: [
                "FleetwardDevice", "FleetwardTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FleetwardCLITests",
            dependencies: [
                "FleetwardCLI", "FleetwardAgentCLI", "FleetwardTestSupport", "FleetwardPKI", "FleetwardDevice", "FleetwardServer",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            // Run by path with python3 (selenium driving chromium), not bundled.
            exclude: ["Fixtures/console_browser.py"],
            swiftSettings: strictSettings
        ),
    ]
)

// libFuzzer targets, only for scripts/fuzz.sh (FLEETWARD_FUZZ=1): they need -sanitize=fuzzer,
// which an ordinary build does not pass, so they stay out of the default build.
if ProcessInfo.processInfo.environment["FLEETWARD_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "FleetwardFuzz",
            dependencies: [
                "CFleetwardFuzzEntry", "FleetwardPKI", "FleetwardRegistry", "FleetwardDevice", "FleetwardMQTT",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ))
    package.targets.append(.target(name: "CFleetwardFuzzEntry"))
    package.products.append(.executable(name: "fleetward-fuzz", targets: ["FleetwardFuzz"]))
}
