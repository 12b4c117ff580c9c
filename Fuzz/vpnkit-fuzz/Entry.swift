// The fuzzing driver. Built with `-sanitize=fuzzer -D FUZZING` (scripts/fuzz.sh), libFuzzer drives
// `LLVMFuzzerTestOneInput` and the target is chosen by VPNKIT_FUZZ_TARGET. Built normally, it is a
// replayer: `vpnkit-fuzz TARGET FILE...` runs the target on each file (crash regressions, corpora).
import Foundation
import VPNKitFuzzTargets

#if FUZZING
nonisolated(unsafe) let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["VPNKIT_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("set VPNKIT_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))\n".utf8))
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

/// libFuzzer's driver, for programs that have a main of their own.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main`; hand it to libFuzzer's driver.
@_cdecl("vpnkit_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
#else
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "--seeds", arguments.count >= 2 {
            writeSeeds(to: arguments[arguments.startIndex + 1], captures: Array(arguments.dropFirst(2)))
            return
        }
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: vpnkit-fuzz TARGET FILE|DIRECTORY...   targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                target.run([UInt8](data))
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs ran clean")
    }

    /// `--seeds DIR CAPTURE...`: writes DIR/TARGET/NAME-N for every seed cut from the captures.
    static func writeSeeds(to directory: String, captures: [String]) {
        var written = 0
        for capture in captures {
            let name = (capture as NSString).lastPathComponent
            for (target, seeds) in FuzzSeeds.extract(fromCapture: capture) {
                let folder = directory + "/" + target.rawValue
                try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                for (index, seed) in seeds.enumerated() {
                    let path = "\(folder)/\(name)-\(index)"
                    if FileManager.default.createFile(atPath: path, contents: Data(seed)) {
                        written += 1
                    } else {
                        FileHandle.standardError.write(Data("cannot write \(path)\n".utf8))
                    }
                }
            }
        }
        print("wrote \(written) seeds under \(directory)")
    }
}
#endif
