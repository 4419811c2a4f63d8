/* The whole on-device flow through edgetune's C ABI: open a plan, enrol 5 examples of
 * each of 3 Fashion-MNIST classes, train a linear adapter with a progress callback,
 * predict 5 held-out examples per class, save the adapter, load it into a fresh session
 * and check the predictions are identical; then refuse a corrupt adapter.
 *
 * usage: flow PLAN.etm IMAGES.idx LABELS.idx ADAPTER_OUT.eta
 * exit 0 when accuracy >= 0.8 and the reloaded adapter predicts identically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edgetune.h"

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

#define CHECK(call) do { EtStatus st_ = (call); if (st_ != ET_STATUS_OK) { \
    fprintf(stderr, "%s failed (%d): %s\n", #call, (int)st_, et_last_error()); return 1; } } while (0)

static int steps_seen = 0;
static int on_progress(uint32_t step, uint32_t steps, float loss, float acc, void *user) {
    (void)acc; (void)user;
    steps_seen++;
    if (step == steps) printf("trained %u steps, final loss %.4f\n", steps, loss);
    return 0; /* non-zero would cancel */
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: flow PLAN IMAGES LABELS OUT\n"); return 2; }
    size_t ni, nl;
    unsigned char *img = slurp(argv[2], &ni), *lab = slurp(argv[3], &nl);
    if (!img || !lab) { fprintf(stderr, "cannot read data\n"); return 1; }
    const unsigned char *px = img + 16, *labels = lab + 8;
    size_t count = nl - 8;
    const int classes[3] = {0, 1, 8}; /* t-shirt, trouser, bag */

    et_session *s = NULL;
    CHECK(et_open_plan_path(argv[1], &s));
    CHECK(et_set_method(s, "linear"));
    size_t len = 0;
    CHECK(et_input_len(s, &len));
    float *x = malloc(len * sizeof(float));
    int seen[3] = {0, 0, 0};
    size_t held[15]; int held_label[15], nh = 0;
    for (size_t i = 0; i < count; i++) {
        for (int c = 0; c < 3; c++) {
            if (labels[i] != classes[c]) continue;
            if (seen[c] < 5) {
                CHECK(et_preprocess_image(s, px + i * 784, 28, 28, 1, x, len));
                CHECK(et_enrol(s, x, len, (uint32_t)c));
            } else if (seen[c] < 10) {
                held[nh] = i; held_label[nh] = c; nh++;
            }
            seen[c]++;
        }
    }
    CHECK(et_train(s, 1, on_progress, NULL));
    uint32_t top[15]; float score;
    int ok = 0;
    for (int h = 0; h < nh; h++) {
        CHECK(et_preprocess_image(s, px + held[h] * 784, 28, 28, 1, x, len));
        CHECK(et_predict(s, x, len, 1, &top[h], &score));
        ok += (int)top[h] == held_label[h];
    }
    double acc = (double)ok / nh;
    printf("held-out accuracy %d/%d = %.3f (progress callbacks: %d)\n", ok, nh, acc, steps_seen);
    CHECK(et_save_adapter(s, argv[4]));

    et_session *s2 = NULL;
    size_t plan_len;
    unsigned char *plan = slurp(argv[1], &plan_len);
    CHECK(et_open_plan(plan, plan_len, &s2));
    CHECK(et_load_adapter(s2, argv[4]));
    int same = 1;
    for (int h = 0; h < nh; h++) {
        uint32_t c2;
        CHECK(et_preprocess_image(s2, px + held[h] * 784, 28, 28, 1, x, len));
        CHECK(et_predict(s2, x, len, 1, &c2, &score));
        same &= c2 == top[h];
    }
    printf("reloaded adapter predicts identically: %s\n", same ? "yes" : "no");

    /* Bad input: a truncated adapter and a NaN input give an error code, not a crash. */
    size_t alen;
    unsigned char *ad = slurp(argv[4], &alen);
    EtStatus st = et_load_adapter_bytes(s2, ad, alen / 2);
    printf("truncated adapter: status %d (%s)\n", (int)st, et_last_error());
    x[0] = 0.0f / 0.0f;
    EtStatus st2 = et_predict(s2, x, len, 1, top, &score);
    printf("NaN input: status %d (%s)\n", (int)st2, et_last_error());
    EtStatus st3 = et_predict(NULL, x, len, 1, top, &score);

    et_free(s);
    et_free(s2);
    free(x); free(img); free(lab); free(plan); free(ad);
    int pass = acc >= 0.8 && same && st == ET_STATUS_BAD_FILE && st2 == ET_STATUS_BAD_INPUT
        && st3 == ET_STATUS_INVALID_ARGUMENT;
    printf("%s\n", pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
}
