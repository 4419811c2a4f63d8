// swift-tools-version:5.9
// The Swift binding of edgetune: `EdgeTune.Session` over the C ABI (targets/capi).
//
// The C library comes from one of two places:
// - `EdgeTuneFFI.xcframework` beside this file, made by `build_xcframework.sh` (iOS
//   device and simulator, macOS): an app depends on the package and nothing else;
// - otherwise the system-library target `CEdgeTune` (module map over
//   targets/capi/include/edgetune.h) links `libedgetune_capi.a` from the linker's search
//   path: `cargo build --release -p edgetune-capi`, then
//   `swift build -Xlinker -L$CARGO_TARGET_DIR/release` (macOS or Linux host).
import PackageDescription
import Foundation

let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let xcframework = here.appendingPathComponent("EdgeTuneFFI.xcframework").path
let useXCFramework = FileManager.default.fileExists(atPath: xcframework)

let cTarget: Target = useXCFramework
    ? .binaryTarget(name: "CEdgeTune", path: "EdgeTuneFFI.xcframework")
    : .systemLibrary(name: "CEdgeTune", path: "Sources/CEdgeTune")

let package = Package(
    name: "EdgeTune",
    platforms: [.iOS(.v13), .macOS(.v11)],
    products: [
        .library(name: "EdgeTune", targets: ["EdgeTune"]),
    ],
    targets: [
        cTarget,
        .target(
            name: "EdgeTune",
            dependencies: ["CEdgeTune"],
            path: "Sources/EdgeTune",
            // What the Rust static library needs beside libSystem
            // (`cargo rustc --target aarch64-apple-ios -- --print native-static-libs`:
            // -lc -lm -liconv -lSystem).
            linkerSettings: [.linkedLibrary("iconv", .when(platforms: [.iOS, .macOS]))]
        ),
    ]
)
