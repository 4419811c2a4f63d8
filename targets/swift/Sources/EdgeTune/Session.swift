// The Swift API of edgetune: a thin layer over the C ABI (targets/capi/include/edgetune.h),
// which calls edgetune::Session. Every call that can fail throws `EdgeTuneError` with the
// library's message.
import CEdgeTune
import Foundation

/// An error of the library: the C status and the message `et_last_error` gave.
public struct EdgeTuneError: Error, CustomStringConvertible, Equatable {
    /// The `EtStatus` value (1 invalid argument, 2 bad file, 3 plan mismatch, 4 bad input,
    /// 5 too large, 6 training diverged or cancelled, 7 I/O, 8 internal).
    public let status: UInt32
    public let message: String
    public var description: String { message }
}

/// Pixel layouts of camera frames and bitmaps (`EtPixelFormat`).
public enum PixelFormat: UInt32 {
    case rgb = 0
    case rgba = 1
    /// `kCVPixelFormatType_32BGRA`, the usual iOS camera and `CGImage` byte order.
    case bgra = 2
    case grey = 3
    /// YUV 4:2:0: Y plane, then interleaved V,U rows.
    case nv21 = 4
    /// YUV 4:2:0: Y plane, then interleaved U,V rows (`kCVPixelFormatType_420YpCbCr8BiPlanarFullRange`
    /// when both planes are contiguous).
    case nv12 = 5
    case bgr = 6
}

/// One class of a prediction (the integer label it was enrolled under) and its score.
public struct Prediction: Equatable {
    public let label: UInt32
    public let score: Float
}

/// Turns a C status into a thrown error carrying the library's message.
private func check(_ status: EtStatus) throws {
    if status == ET_STATUS_OK {
        return
    }
    let message = et_last_error().map { String(cString: $0) } ?? "unknown error"
    throw EdgeTuneError(status: UInt32(status.rawValue), message: message)
}

/// Holds the Swift progress closure while `et_train` runs; the C callback finds it
/// through the user pointer.
private final class ProgressBox {
    let handler: (Int, Int, Float, Float) -> Bool
    init(_ handler: @escaping (Int, Int, Float, Float) -> Bool) {
        self.handler = handler
    }
}

/// A plan (a frozen backbone compiled by `edgetune compile`), the examples enrolled on it
/// under integer labels, a method and the adapter it trains. One thread at a time uses a
/// session; different sessions run on different threads at once.
public final class Session {
    private let handle: OpaquePointer

    /// Opens the plan file at `planPath` and, when given, the adapter at `adapterPath`
    /// (its method and classes take over).
    public init(planPath: String, adapterPath: String? = nil) throws {
        var out: OpaquePointer?
        try check(et_open_plan_path(planPath, &out))
        guard let h = out else {
            throw EdgeTuneError(status: 8, message: "et_open_plan_path returned no session")
        }
        handle = h
        if let a = adapterPath {
            try loadAdapter(path: a)
        }
    }

    /// A session on a plan held in memory (e.g. a bundle resource read into `Data`).
    public init(plan: Data, adapter: Data? = nil) throws {
        var out: OpaquePointer?
        try plan.withUnsafeBytes { (b: UnsafeRawBufferPointer) in
            try check(et_open_plan(b.bindMemory(to: UInt8.self).baseAddress, b.count, &out))
        }
        guard let h = out else {
            throw EdgeTuneError(status: 8, message: "et_open_plan returned no session")
        }
        handle = h
        if let a = adapter {
            try a.withUnsafeBytes { (b: UnsafeRawBufferPointer) in
                try check(et_load_adapter_bytes(handle, b.bindMemory(to: UInt8.self).baseAddress, b.count))
            }
        }
    }

    deinit {
        et_free(handle)
    }

    /// Chooses the method of the next fit: `ncm`, `linear`, `moment`, `ladder`, `query`,
    /// `tail`, `bias` or `lora`.
    public func setMethod(_ method: String) throws {
        try check(et_set_method(handle, method))
    }

    /// Training steps of the trained methods (0: the method's default).
    public func setSteps(_ steps: UInt32) throws {
        try check(et_set_steps(handle, steps))
    }

    /// Serves trained tails (`tail`, `bias`, `lora`) re-quantised to int8 from the next fit.
    public func setServeInt8(_ on: Bool) throws {
        try check(et_set_serve_int8(handle, on ? 1 : 0))
    }

    /// Runs a frame through the backbone and caches what the method reads, under `label`.
    /// Rows are `stride` bytes apart (0: packed); `rotation` (0, 90, 180, 270) is the
    /// clockwise rotation that makes the picture upright.
    public func enrol(pixels: UnsafeRawBufferPointer, format: PixelFormat, width: Int,
                      height: Int, stride: Int = 0, rotation: UInt32 = 0,
                      label: UInt32) throws {
        try check(et_enrol_image(handle, pixels.bindMemory(to: UInt8.self).baseAddress,
                                 pixels.count, format.rawValue, width, height, stride,
                                 rotation, label))
    }

    public func enrol(pixels: Data, format: PixelFormat, width: Int, height: Int,
                      stride: Int = 0, rotation: UInt32 = 0, label: UInt32) throws {
        try pixels.withUnsafeBytes {
            try enrol(pixels: $0, format: format, width: width, height: height,
                      stride: stride, rotation: rotation, label: label)
        }
    }

    /// Trains the chosen method on everything enrolled. `progress(step, steps, loss,
    /// accuracy)` sees each step and cancels the fit by returning false (the fit then
    /// throws).
    public func fit(seed: UInt64 = 0,
                    progress: ((Int, Int, Float, Float) -> Bool)? = nil) throws {
        guard let progress = progress else {
            try check(et_train(handle, seed, nil, nil))
            return
        }
        let box = ProgressBox(progress)
        let user = Unmanaged.passUnretained(box).toOpaque()
        let status = et_train(handle, seed, { step, steps, loss, accuracy, user in
            guard let user = user else { return 1 }
            let box = Unmanaged<ProgressBox>.fromOpaque(user).takeUnretainedValue()
            return box.handler(Int(step), Int(steps), loss, accuracy) ? 0 : 1
        }, user)
        // The box lives until et_train has returned.
        withExtendedLifetime(box) {}
        try check(status)
    }

    /// The `top` best classes of a frame, best first (fewer when there are fewer classes).
    public func predict(pixels: UnsafeRawBufferPointer, format: PixelFormat, width: Int,
                        height: Int, stride: Int = 0, rotation: UInt32 = 0,
                        top: Int = 3) throws -> [Prediction] {
        let k = max(top, 1)
        var labels = [UInt32](repeating: UInt32.max, count: k)
        var scores = [Float](repeating: -Float.infinity, count: k)
        try check(et_predict_image(handle, pixels.bindMemory(to: UInt8.self).baseAddress,
                                   pixels.count, format.rawValue, width, height, stride,
                                   rotation, UInt32(k), &labels, &scores))
        // Slots past the number of classes keep their fill values.
        return zip(labels, scores)
            .filter { $0.0 != UInt32.max }
            .map { Prediction(label: $0.0, score: $0.1) }
    }

    public func predict(pixels: Data, format: PixelFormat, width: Int, height: Int,
                        stride: Int = 0, rotation: UInt32 = 0,
                        top: Int = 3) throws -> [Prediction] {
        try pixels.withUnsafeBytes {
            try predict(pixels: $0, format: format, width: width, height: height,
                        stride: stride, rotation: rotation, top: top)
        }
    }

    /// Drops every example of `label` and refits a trained adapter without it.
    public func removeClass(_ label: UInt32) throws {
        try check(et_remove_class(handle, label))
    }

    /// Writes the adapter atomically (temporary file, fsync, rename).
    public func save(path: String) throws {
        try check(et_save_adapter(handle, path))
    }

    /// Loads an adapter trained on this plan; its method and classes take over.
    public func loadAdapter(path: String) throws {
        try check(et_load_adapter(handle, path))
    }
}
