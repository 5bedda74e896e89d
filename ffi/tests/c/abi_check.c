/* abi_check.c: exercises the C ABI from plain C99 (compiled with -pedantic -Werror by
 * ffi/tests/native.rs): the header must be valid C, and every failure mode must come back as a
 * status with a message. Prints one line per failed check; exits with the number of failures. */

#include <agentcompress.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

/* Records a failed check. */
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("FAIL line %d: %s (last error: %s)\n", __LINE__, #cond, ac_last_error()); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* Whether the last error mentions `what`. */
static int error_mentions(const char *what) { return strstr(ac_last_error(), what) != NULL; }

/* Stops once token index `*(unsigned *)user_data - 1` has arrived. */
static bool stop_after(void *user_data, const ac_token *token) {
    const unsigned *count = (const unsigned *)user_data;
    CHECK(token != NULL && token->text != NULL && strlen(token->text) == token->text_len);
    return token->index + 1 < *count;
}

int main(void) {
    ac_engine_params ep = ac_engine_default_params();
    ac_run_params rp = ac_run_default_params();
    ac_engine *engine = NULL;
    ac_result *result = NULL;
    ac_route_info route;
    ac_run_info info;
    ac_stats stats;
    unsigned count = 3;

    CHECK(strcmp(ac_status_string(AC_CORRUPT_MODEL), "AC_CORRUPT_MODEL") == 0);
    CHECK(strlen(ac_version()) > 0);
    CHECK(rp.max_tokens > 0 && rp.top_p > 0.0f);

    /* NULLs, bad paths, bad devices. */
    CHECK(ac_engine_open(NULL, NULL, &engine) == AC_INVALID_ARGUMENT && engine == NULL);
    CHECK(error_mentions("path"));
    CHECK(ac_engine_open("/no/such/model.bin", NULL, &engine) == AC_IO && engine == NULL);
    CHECK(error_mentions("/no/such/model.bin"));
    ep.device = "gpu9";
    CHECK(ac_engine_open("builtin:tiny", &ep, &engine) == AC_INVALID_ARGUMENT);
    CHECK(error_mentions("gpu9"));
    /* Versioned params: size is set by both initialisers; 0 or too small is refused. */
    CHECK(ep.size == sizeof(ac_engine_params) && rp.size == sizeof(ac_run_params));
    {
        ac_engine_params zeroed;
        ac_run_params run_init;
        memset(&zeroed, 0, sizeof zeroed);
        zeroed.device = "cpu";
        CHECK(ac_engine_open("builtin:tiny", &zeroed, &engine) == AC_INVALID_ARGUMENT);
        CHECK(engine == NULL && error_mentions("params->size is 0"));
        zeroed.size = 4;
        CHECK(ac_engine_open("builtin:tiny", &zeroed, &engine) == AC_INVALID_ARGUMENT);
        CHECK(error_mentions("params->size is 4"));
        CHECK(ac_engine_params_init(&zeroed, sizeof zeroed) == AC_OK);
        CHECK(zeroed.size == sizeof zeroed && zeroed.device == NULL && zeroed.memory_budget == 0);
        CHECK(ac_run_params_init(&run_init, sizeof run_init) == AC_OK);
        CHECK(run_init.size == sizeof run_init && run_init.max_tokens == rp.max_tokens);
        CHECK(ac_run_params_init(NULL, sizeof run_init) == AC_INVALID_ARGUMENT);
        CHECK(ac_run_params_init(&run_init, 1) == AC_INVALID_ARGUMENT);
    }
    ep.device = "cuda:999";
    CHECK(ac_engine_open("builtin:tiny", &ep, &engine) == AC_NO_DEVICE && engine == NULL);
    ep.device = "cpu";
    CHECK(ac_engine_open("builtin:tiny", &ep, &engine) == AC_OK && engine != NULL);
    CHECK(strcmp(ac_last_error(), "") == 0);

    /* Route, then a run cancelled by its callback after three tokens. */
    CHECK(ac_route(engine, "plan a trip", &route) == AC_OK);
    CHECK(route.expected_cost > 0.0 && !isnan(route.expected_cost));
    CHECK(ac_route(engine, "caf\xc3", &route) == AC_INVALID_ARGUMENT && error_mentions("UTF-8"));
    rp.max_tokens = 10;
    rp.stop_at_eos = false;
    CHECK(ac_run(engine, "plan a trip", &rp, stop_after, &count, &result) == AC_OK);
    CHECK(ac_result_info(result, &info) == AC_OK && info.cancelled && info.tokens == 3);
    CHECK(ac_result_text(result) != NULL && strlen(ac_result_text(result)) == info.text_len);
    ac_result_free(result);
    ac_result_free(result);
    CHECK(error_mentions("not live"));
    rp.temperature = -2.0f;
    CHECK(ac_run(engine, "x", &rp, NULL, NULL, &result) == AC_INVALID_ARGUMENT);
    CHECK(result == NULL && error_mentions("temperature"));

    CHECK(ac_engine_stats(engine, &stats) == AC_OK);
    CHECK(stats.tasks == 1 && stats.tokens == 3 && stats.per_precision[route.precision] == 1);
    CHECK(ac_engine_stats(engine, NULL) == AC_INVALID_ARGUMENT);

    /* Double close and use after close are detected, not undefined. */
    ac_engine_close(engine);
    CHECK(strcmp(ac_last_error(), "") == 0);
    ac_engine_close(engine);
    CHECK(error_mentions("not live"));
    CHECK(ac_route(engine, "x", &route) == AC_INVALID_ARGUMENT);
    ac_result_free(NULL);
    CHECK(strcmp(ac_last_error(), "") == 0);

    if (failures == 0) printf("abi_check: all checks passed\n");
    return failures;
}
