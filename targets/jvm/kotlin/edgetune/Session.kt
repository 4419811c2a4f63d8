// The JVM API of edgetune (Kotlin; usable from Java): a thin layer over the native
// library libedgetune_jni (targets/jvm/src/lib.rs), which calls edgetune::Session.
package edgetune

import java.io.Closeable
import java.nio.ByteBuffer

/** Every error of the library (bad plan or adapter file, a frame of the wrong size, a
 * cancelled fit, ...), with the library's message. */
class EdgetuneException(message: String) : RuntimeException(message)

/** Pixel layouts of camera frames and bitmaps (the library's `PixelFormat`). */
enum class PixelFormat(val code: Int) {
    RGB(0),
    RGBA(1),
    BGRA(2),
    GREY(3),
    /** YUV 4:2:0: Y plane, then interleaved V,U rows (Android's camera). */
    NV21(4),
    /** YUV 4:2:0: Y plane, then interleaved U,V rows. */
    NV12(5),
    BGR(6),
}

/** One class of a prediction and its score (higher is better). */
data class Prediction(val label: String, val score: Float)

/** Options of one fit: `steps` (0: the method's default), the `seed` of initialisation and
 * batches, and `int8` serving of trained tails (`tail`, `bias`, `lora`). */
class FitOptions @JvmOverloads constructor(
    val steps: Int = 0,
    val seed: Long = 0L,
    val int8: Boolean = false
)

/** What a fit produced. `loss` and `accuracy` are the last step's (NaN for `ncm`, which
 * has no steps). */
data class FitResult(
    val method: String,
    val params: Long,
    val steps: Long,
    val examples: Long,
    val cacheBytes: Long,
    val adapterBytes: Long,
    val peakBytes: Long,
    val loss: Float,
    val accuracy: Float
)

/**
 * A plan (a frozen backbone compiled by `edgetune compile`), the examples enrolled on it,
 * a method and the adapter it trains: `edgetune::Session`.
 *
 * Close it (or use `use { }` / try-with-resources) to free the native memory. It is a
 * `java.io.Closeable` (so an `AutoCloseable`), whose `use` every Kotlin standard library has. Its methods
 * are synchronised: one call runs at a time; different sessions run on different threads
 * at once.
 */
class Session private constructor(private var handle: Long) : Closeable {

    /** Opens the plan file at [planPath] and, when given, the adapter at [adapterPath]
     * (its method and classes take over). */
    @JvmOverloads
    constructor(planPath: String, adapterPath: String? = null) :
        this(Native.open(planPath, adapterPath))

    companion object {
        /** A session on a plan (and adapter) held in memory, e.g. read from an asset. */
        @JvmStatic
        @JvmOverloads
        fun fromBytes(plan: ByteArray, adapter: ByteArray? = null): Session =
            Session(Native.openBytes(plan, adapter))
    }

    private fun live(): Long {
        if (handle == 0L) throw EdgetuneException("the Session is closed")
        return handle
    }

    /** Runs the frame through the backbone and caches what the method reads, under [label].
     * Rows are [stride] bytes apart (0: packed); [rotation] (0, 90, 180, 270) is the
     * clockwise rotation that makes the picture upright (Android's `rotationDegrees`). */
    @Synchronized
    fun enrol(
        pixels: ByteArray, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, label: String
    ) = Native.enrol(live(), pixels, null, 0, pixels.size, format.code, width, height,
        stride, rotation, label)

    /** [enrol] of the buffer's bytes from its position to its limit (a direct buffer, as
     * camera planes are, is read in place). */
    @Synchronized
    fun enrol(
        pixels: ByteBuffer, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, label: String
    ) {
        val h = live()
        withPixels(pixels) { arr, buf, off, len ->
            Native.enrol(h, arr, buf, off, len, format.code, width, height, stride, rotation,
                label)
        }
    }

    /** [enrol] under an integer label (its decimal form is the class name). */
    fun enrol(
        pixels: ByteArray, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, label: Int
    ) = enrol(pixels, format, width, height, stride, rotation, label.toString())

    fun enrol(
        pixels: ByteBuffer, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, label: Int
    ) = enrol(pixels, format, width, height, stride, rotation, label.toString())

    /** Trains [method] (null: the current one; `ncm`, `linear`, `moment`, `ladder`,
     * `query`, `tail`, `bias`, `lora`) on everything enrolled. [listener] sees each step
     * and cancels the fit by returning false. */
    @Synchronized
    @JvmOverloads
    fun fit(
        method: String? = null,
        options: FitOptions = FitOptions(),
        listener: ProgressListener? = null
    ): FitResult {
        val v = Native.fit(live(), method, options.steps, options.seed, options.int8, listener)
        return FitResult(Native.method(handle), v[0].toLong(), v[1].toLong(), v[2].toLong(),
            v[3].toLong(), v[4].toLong(), v[5].toLong(), v[6].toFloat(), v[7].toFloat())
    }

    /** The [top] best classes of the frame, best first (fewer when there are fewer
     * classes). */
    @Synchronized
    @JvmOverloads
    fun predict(
        pixels: ByteArray, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, top: Int = 3
    ): List<Prediction> {
        val labels = arrayOfNulls<String>(maxOf(top, 0))
        val scores = Native.predict(live(), pixels, null, 0, pixels.size, format.code, width,
            height, stride, rotation, top, labels)
        return scores.indices.map { Prediction(labels[it]!!, scores[it]) }
    }

    @Synchronized
    @JvmOverloads
    fun predict(
        pixels: ByteBuffer, format: PixelFormat, width: Int, height: Int, stride: Int,
        rotation: Int, top: Int = 3
    ): List<Prediction> {
        val h = live()
        val labels = arrayOfNulls<String>(maxOf(top, 0))
        val scores = withPixels(pixels) { arr, buf, off, len ->
            Native.predict(h, arr, buf, off, len, format.code, width, height, stride,
                rotation, top, labels)
        }
        return scores.indices.map { Prediction(labels[it]!!, scores[it]) }
    }

    /** Writes the adapter atomically (temporary file, fsync, rename). */
    @Synchronized
    fun save(path: String) = Native.save(live(), path)

    /** Loads an adapter trained on this plan; its method and classes take over. */
    @Synchronized
    fun loadAdapter(path: String) = Native.loadAdapter(live(), path)

    /** Drops a class (its examples and cached rows) and removes it from a trained adapter without training. */
    @Synchronized
    fun removeClass(label: String) = Native.removeClass(live(), label)

    fun removeClass(label: Int) = removeClass(label.toString())

    /** Chooses the method of the next fit. */
    @Synchronized
    fun setMethod(method: String) = Native.setMethod(live(), method)

    /** The current method's name. */
    val method: String
        @Synchronized get() = Native.method(live())

    /** Class names in label order. */
    val classes: List<String>
        @Synchronized get() = Native.classes(live()).map { it!! }

    /** Examples enrolled. */
    val examples: Int
        @Synchronized get() = Native.examples(live())

    /** Frees the native session; later calls throw [EdgetuneException]. */
    @Synchronized
    override fun close() {
        if (handle != 0L) {
            Native.free(handle)
            handle = 0L
        }
    }

    private inline fun <T> withPixels(
        px: ByteBuffer,
        f: (ByteArray?, ByteBuffer?, Int, Int) -> T
    ): T = when {
        px.isDirect -> f(null, px, px.position(), px.remaining())
        px.hasArray() -> f(px.array(), null, px.arrayOffset() + px.position(), px.remaining())
        else -> {
            val copy = ByteArray(px.remaining())
            px.duplicate().get(copy)
            f(copy, null, 0, copy.size)
        }
    }
}

/** The native methods (libedgetune_jni). */
internal object Native {
    /** System property and environment variable naming the library file, for runs
     * outside an app (host tests): tried when `System.loadLibrary` finds nothing. */
    const val PROPERTY = "edgetune.jni.library"
    const val ENV = "EDGETUNE_JNI_LIBRARY"

    init {
        try {
            // An app's jniLibs/<abi>/libedgetune_jni.so, or java.library.path.
            System.loadLibrary("edgetune_jni")
        } catch (e: UnsatisfiedLinkError) {
            val path = System.getProperty(PROPERTY) ?: System.getenv(ENV)
                ?: throw UnsatisfiedLinkError(
                    "${e.message} (for runs outside an app, set -D$PROPERTY=/path/to/" +
                        "libedgetune_jni.so or $ENV)"
                )
            System.load(path)
        }
    }

    @JvmStatic external fun open(plan: String, adapter: String?): Long
    @JvmStatic external fun openBytes(plan: ByteArray, adapter: ByteArray?): Long
    @JvmStatic external fun free(handle: Long)
    @JvmStatic external fun enrol(
        handle: Long, arr: ByteArray?, buf: ByteBuffer?, off: Int, len: Int, format: Int,
        w: Int, h: Int, stride: Int, rotation: Int, label: String
    )
    @JvmStatic external fun predict(
        handle: Long, arr: ByteArray?, buf: ByteBuffer?, off: Int, len: Int, format: Int,
        w: Int, h: Int, stride: Int, rotation: Int, top: Int, labels: Array<String?>
    ): FloatArray
    @JvmStatic external fun fit(
        handle: Long, method: String?, steps: Int, seed: Long, int8: Boolean,
        listener: ProgressListener?
    ): DoubleArray
    @JvmStatic external fun save(handle: Long, path: String)
    @JvmStatic external fun loadAdapter(handle: Long, path: String)
    @JvmStatic external fun removeClass(handle: Long, label: String)
    @JvmStatic external fun setMethod(handle: Long, method: String)
    @JvmStatic external fun method(handle: Long): String
    @JvmStatic external fun classes(handle: Long): Array<String?>
    @JvmStatic external fun examples(handle: Long): Int
}
