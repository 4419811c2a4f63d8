// Drives the Kotlin API through the whole flow for tests/jvm_flow.rs: enrols raw frames
// listed in a manifest, fits each method, predicts the queries, saves, reloads and checks
// the reloaded session predicts the same, then provokes errors. Prints one line per
// result for the Rust side to compare with the CLI and with the library's messages.
import edgetune.EdgetuneException
import edgetune.FitOptions
import edgetune.PixelFormat
import edgetune.Prediction
import edgetune.ProgressListener
import edgetune.Session
import java.io.File
import java.nio.ByteBuffer

class Frame(val label: String, val format: PixelFormat, val w: Int, val h: Int,
            val stride: Int, val rotation: Int, val path: String) {
    val bytes: ByteArray by lazy { File(path).readBytes() }
}

fun parse(line: String): Frame {
    val f = line.split(" ")
    return Frame(f[1], PixelFormat.valueOf(f[2]), f[3].toInt(), f[4].toInt(), f[5].toInt(),
        f[6].toInt(), f[7])
}

// The three ways pixels reach the library: a byte[], a direct ByteBuffer (read in place)
// and a heap ByteBuffer that starts inside its array.
fun enrolAs(s: Session, x: Frame, way: Int) = when (way % 3) {
    0 -> s.enrol(x.bytes, x.format, x.w, x.h, x.stride, x.rotation, x.label)
    1 -> s.enrol(direct(x.bytes), x.format, x.w, x.h, x.stride, x.rotation, x.label)
    else -> s.enrol(offset(x.bytes), x.format, x.w, x.h, x.stride, x.rotation, x.label)
}

fun predictAs(s: Session, x: Frame, way: Int, top: Int = 4): List<Prediction> = when (way % 3) {
    0 -> s.predict(x.bytes, x.format, x.w, x.h, x.stride, x.rotation, top)
    1 -> s.predict(direct(x.bytes), x.format, x.w, x.h, x.stride, x.rotation, top)
    else -> s.predict(offset(x.bytes), x.format, x.w, x.h, x.stride, x.rotation, top)
}

fun direct(b: ByteArray): ByteBuffer {
    val d = ByteBuffer.allocateDirect(b.size)
    d.put(b)
    d.flip()
    return d
}

fun offset(b: ByteArray): ByteBuffer {
    val big = ByteArray(b.size + 13) { 0x55 }
    System.arraycopy(b, 0, big, 7, b.size)
    return ByteBuffer.wrap(big, 7, b.size).slice()
}

fun check(ok: Boolean, what: String) {
    if (!ok) throw AssertionError(what)
}

fun show(p: List<Prediction>) = p.joinToString(" ") { "${it.label}=${it.score}" }

inline fun expectError(key: String, f: () -> Unit) {
    try {
        f()
    } catch (e: EdgetuneException) {
        println("error $key EdgetuneException: ${e.message}")
        return
    }
    throw AssertionError("$key: no EdgetuneException")
}

fun main(args: Array<String>) {
    val plan = args[0]
    val lines = File(args[1]).readLines().filter { it.isNotBlank() }
    val out = File(args[2])
    val train = lines.filter { it.startsWith("enrol ") }.map(::parse)
    val queries = lines.filter { it.startsWith("query ") }.map(::parse)
    val names = train.map { it.label }.distinct()

    for (method in args[3].split(",")) {
        Session(plan).use { s ->
            train.forEachIndexed { i, x -> enrolAs(s, x, i) }
            check(s.examples == train.size, "examples ${s.examples}")
            check(s.classes == names, "classes ${s.classes}")
            var calls = 0
            var reported = 0
            val fit = s.fit(method, FitOptions(seed = 0L),
                ProgressListener { _, steps, loss, _ -> calls++; reported = steps; steps == 0 || !loss.isNaN() })
            check(fit.method == method && fit.examples == train.size.toLong(), "$fit")
            // ncm has no steps; a trained method reports its step count at least once.
            check(if (fit.steps == 0L) calls <= 1 else calls > 0 && reported.toLong() == fit.steps,
                "$calls progress calls reporting $reported steps for ${fit.steps} steps")
            println("fit $method steps=${fit.steps} progress=$calls params=${fit.params} " +
                "loss=${fit.loss}")
            val eta = File(out, "$method.eta").path
            s.save(eta)
            val preds = queries.mapIndexed { i, q -> predictAs(s, q, i) }
            queries.zip(preds).forEach { (q, p) -> println("pred $method ${q.path} ${show(p)}") }
            // Reloaded from the files (another way of handing over each frame): the same.
            Session(plan, eta).use { r ->
                check(r.method == method && r.classes == names, "reload ${r.method} ${r.classes}")
                queries.forEachIndexed { i, q ->
                    val again = predictAs(r, q, i + 1)
                    check(again == preds[i], "reload $method ${q.path}: ${show(again)} vs ${show(preds[i])}")
                }
            }
            Session.fromBytes(File(plan).readBytes(), File(eta).readBytes()).use { r ->
                queries.forEachIndexed { i, q ->
                    check(predictAs(r, q, i + 2) == preds[i], "fromBytes $method ${q.path}")
                }
            }
            println("reload $method identical ${queries.size}")
        }
    }

    // Removing a class: gone from the classes and from every prediction.
    Session(plan).use { s ->
        train.forEachIndexed { i, x -> enrolAs(s, x, i) }
        s.fit("ncm")
        val gone = names[1]
        s.removeClass(gone)
        check(s.classes == names - gone, "after removeClass: ${s.classes}")
        for (q in queries) check(predictAs(s, q, 0).none { it.label == gone }, "$gone still predicted")
        println("removeClass $gone remaining ${s.classes.joinToString(",")}")
        expectError("removeClass") { s.removeClass(gone) }
    }

    // Bad input: typed exceptions with the library's message.
    Session(plan).use { s ->
        expectError("noAdapter") { predictAs(s, queries[0], 0) }
        expectError("size") { s.enrol(ByteArray(299), PixelFormat.RGB, 10, 10, 0, 0, "a") }
        expectError("sizeDirect") {
            s.predict(direct(ByteArray(299)), PixelFormat.RGB, 10, 10, 0, 0)
        }
        expectError("rotation") { s.enrol(ByteArray(300), PixelFormat.RGB, 10, 10, 0, 45, "a") }
        expectError("method") { s.fit("knn") }
        train.forEachIndexed { i, x -> enrolAs(s, x, i) }
        // query trains in steps and reports each one (linear reports once, at the end).
        var calls = 0
        expectError("cancel") {
            s.fit("query", FitOptions(steps = 10), ProgressListener { _, _, _, _ -> ++calls < 3 })
        }
        check(calls == 3, "cancel after $calls calls")
        // An exception thrown by the listener cancels the fit and reaches the caller as is.
        try {
            s.fit("query", FitOptions(steps = 10),
                ProgressListener { _, _, _, _ -> throw IllegalStateException("stop from the listener") })
            throw AssertionError("the listener's exception was lost")
        } catch (e: IllegalStateException) {
            println("listener exception IllegalStateException: ${e.message}")
        }
        // Calling the session from its own listener is refused, not run on the busy session.
        expectError("busy") {
            s.fit("query", FitOptions(steps = 10), ProgressListener { _, _, _, _ -> s.examples > 0 })
        }
        // The same for a method that reports once, at its end.
        try {
            s.fit("linear", FitOptions(),
                ProgressListener { _, _, _, _ -> throw IllegalStateException("stop from the listener") })
            throw AssertionError("the listener's exception was lost (linear)")
        } catch (e: IllegalStateException) {
            println("listener exception (linear) IllegalStateException: ${e.message}")
        }
        // Still usable after cancelled fits.
        check(s.fit("query", FitOptions(steps = 10)).steps == 10L, "refit after cancel")
        check(predictAs(s, queries[0], 1).size == 4, "predict after cancel")
        expectError("save") { s.save(File(out, "no-such-dir/x.eta").path) }
    }
    expectError("plan") { Session(File(out, "nope.etm").path) }
    expectError("adapter") { Session(plan, File(out, "nope.eta").path) }
    val closed = Session(plan)
    closed.close()
    closed.close()
    expectError("closed") { closed.setMethod("ncm") }
    println("PASS")
}
