package edgetune;

/**
 * Sees each training step of {@link Session#fit}. Declared in Java so that Kotlin lambdas
 * and Java lambdas both convert to it.
 */
@FunctionalInterface
public interface ProgressListener {
    /**
     * @param step     the step just taken (1-based)
     * @param steps    the steps of the whole fit
     * @param loss     the step's training loss
     * @param accuracy the training accuracy of the step's batch (0..1)
     * @return false to cancel the fit (it then throws {@link EdgetuneException}); an
     *     exception thrown here also cancels the fit and reaches the caller of fit.
     */
    boolean onProgress(int step, int steps, float loss, float accuracy);
}
