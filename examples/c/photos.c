/* Camera frames through edgetune's C ABI: enrol photos given as raw frames in the pixel
 * formats apps have (RGB, RGBA, BGRA, NV21, with row padding and a rotation), train,
 * and print the top class of each query frame, so a test can compare them with the CLI's
 * predictions on the same photos.
 *
 * usage: photos PLAN.etm MANIFEST METHOD
 * MANIFEST lines: enrol|query LABEL FORMAT W H STRIDE ROTATION FILE  (FORMAT: EtPixelFormat
 * value; FILE: the raw frame bytes). Prints "query FILE LABEL SCORE" per query line. */
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
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

#define CHECK(call) do { EtStatus st_ = (call); if (st_ != ET_STATUS_OK) { \
    fprintf(stderr, "%s failed (%d): %s\n", #call, (int)st_, et_last_error()); return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: photos PLAN MANIFEST METHOD\n"); return 2; }
    et_session *s = NULL;
    CHECK(et_open_plan_path(argv[1], &s));
    CHECK(et_set_method(s, argv[3]));
    FILE *m = fopen(argv[2], "r");
    if (!m) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    char role[16], file[4096];
    unsigned label, format, w, h, stride, rot;
    int trained = 0;
    while (fscanf(m, "%15s %u %u %u %u %u %u %4095s", role, &label, &format, &w, &h, &stride,
                  &rot, file) == 8) {
        size_t n;
        unsigned char *px = slurp(file, &n);
        if (!px) { fprintf(stderr, "cannot read %s\n", file); return 1; }
        if (strcmp(role, "enrol") == 0) {
            CHECK(et_enrol_image(s, px, n, format, w, h, stride, rot, label));
        } else {
            if (!trained) { CHECK(et_train(s, 0, NULL, NULL)); trained = 1; }
            uint32_t top; float score;
            CHECK(et_predict_image(s, px, n, format, w, h, stride, rot, 1, &top, &score));
            printf("query %s %u %.5f\n", file, top, score);
        }
        free(px);
    }
    fclose(m);
    /* A frame shorter than its format needs is a typed error, not a read past the end. */
    unsigned char small[8] = {0};
    EtStatus st = et_enrol_image(s, small, sizeof small, ET_PIXEL_FORMAT_NV21, 64, 64, 0, 0, 0);
    printf("short frame: status %d (%s)\n", (int)st, et_last_error());
    EtStatus st2 = et_enrol_image(s, small, sizeof small, 99, 1, 1, 0, 0, 0);
    printf("unknown format: status %d (%s)\n", (int)st2, et_last_error());
    et_free(s);
    int pass = trained && st == ET_STATUS_BAD_INPUT && st2 == ET_STATUS_INVALID_ARGUMENT;
    printf("%s\n", pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
}
