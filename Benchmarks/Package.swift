// swift-tools-version: 6.1
import Foundation
import PackageDescription

// The project is a path dependency; SwiftPM names it after its folder, whatever the clone is called.
let project = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

// The benchmarks live in their own package so that building and testing the project does not build
// package-benchmark. Run them from this folder: `swift package benchmark` (see ../BENCHMARKS.md).
let package = Package(
    name: "SwiftVPNKitBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "WireBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "VPNKitBase", package: project),
                .product(name: "VPNKitEthernet", package: project),
                .product(name: "VPNKitIPv4", package: project),
                .product(name: "VPNKitTCP", package: project),
                .product(name: "VPNKitARP", package: project),
                .product(name: "VPNKitUDP", package: project),
                .product(name: "VPNKitStack", package: project),
                .product(name: "VPNKitTransport", package: project),
                .product(name: "VPNKit", package: project),
            ],
            path: "WireBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
