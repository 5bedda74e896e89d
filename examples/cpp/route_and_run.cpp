// route_and_run: open a model through the AgentCompress C ABI, route a task, run it while
// printing the token stream, then print the result and the engine's statistics.
//
//   route_and_run MODEL [TOKENIZER|-] [TASK] [MAX_TOKENS]
//
// MODEL is a model file or directory, or "builtin:demo" (no file needed). The exit status is 0
// on success, otherwise the failing call's ac_status value (or 100 when the streamed text does
// not match the result's text).
//
// Build (after installing the library):
//   g++ -std=c++17 route_and_run.cpp $(pkg-config --cflags --libs agentcompress)

#include <agentcompress.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

// Owns an engine handle.
struct EngineCloser {
    void operator()(ac_engine *e) const { ac_engine_close(e); }
};
using Engine = std::unique_ptr<ac_engine, EngineCloser>;

// Owns a result handle.
struct ResultFreer {
    void operator()(ac_result *r) const { ac_result_free(r); }
};
using Result = std::unique_ptr<ac_result, ResultFreer>;

// Prints the failed call and returns its status as the exit code.
int fail(const char *what, ac_status status) {
    std::fprintf(stderr, "%s failed: %s: %s\n", what, ac_status_string(status), ac_last_error());
    return static_cast<int>(status);
}

// What the token callback accumulates.
struct Stream {
    std::string text;
    unsigned tokens = 0;
};

// Prints each token as it arrives and keeps a copy to compare with the final text.
extern "C" bool on_token(void *user_data, const ac_token *token) {
    auto *stream = static_cast<Stream *>(user_data);
    stream->text.append(token->text, token->text_len);
    // The last call may repeat the final index (text held back inside a UTF-8 character).
    stream->tokens = token->index + 1;
    std::fwrite(token->text, 1, token->text_len, stdout);
    std::fflush(stdout);
    return true;  // false would stop generation (the run still returns AC_OK, cancelled)
}

void print_route(const char *label, const ac_route_info &r) {
    std::printf("%s: precision=%s complexity=", label, ac_precision_name(r.precision));
    if (r.has_complexity) {
        std::printf("%.3f", r.complexity);
    } else {
        std::printf("n/a");
    }
    std::printf(" expected_cost=%.3f swap=%s\n", r.expected_cost, r.swap ? "yes" : "no");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL [TOKENIZER|-] [TASK] [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1];
    const char *tokenizer = argc > 2 && std::string(argv[2]) != "-" ? argv[2] : nullptr;
    const char *task = argc > 3 ? argv[3] : "Once upon a time";
    const unsigned max_tokens = argc > 4 ? static_cast<unsigned>(std::atoi(argv[4])) : 48;

    std::printf("agentcompress %s\n", ac_version());
    // The init functions fill the defaults for this header's struct size (params.size), so the
    // program keeps working against a newer library whose structs have grown.
    ac_engine_params params;
    ac_status s = ac_engine_params_init(&params, sizeof params);
    if (s != AC_OK) return fail("ac_engine_params_init", s);
    params.device = "cpu";
    params.tokenizer_path = tokenizer;
    ac_engine *raw_engine = nullptr;
    s = ac_engine_open(model, &params, &raw_engine);
    if (s != AC_OK) return fail("ac_engine_open", s);
    Engine engine(raw_engine);

    ac_route_info route;
    s = ac_route(engine.get(), task, &route);
    if (s != AC_OK) return fail("ac_route", s);
    print_route("route", route);

    ac_run_params run;
    s = ac_run_params_init(&run, sizeof run);
    if (s != AC_OK) return fail("ac_run_params_init", s);
    run.max_tokens = max_tokens;
    Stream stream;
    ac_result *raw_result = nullptr;
    std::printf("stream: %s", task);
    s = ac_run(engine.get(), task, &run, on_token, &stream, &raw_result);
    std::printf("\n");
    if (s != AC_OK) return fail("ac_run", s);
    Result result(raw_result);

    ac_run_info info;
    s = ac_result_info(result.get(), &info);
    if (s != AC_OK) return fail("ac_result_info", s);
    const std::string text(ac_result_text(result.get()), info.text_len);
    ac_route_info taken;
    s = ac_result_route(result.get(), &taken);
    if (s != AC_OK) return fail("ac_result_route", s);
    print_route("taken", taken);
    std::printf("result: %llu prompt tokens, %llu tokens, cancelled=%s, eos=%s, %.1f ms prefill, "
                "%.1f ms decode\n",
                static_cast<unsigned long long>(info.prompt_tokens),
                static_cast<unsigned long long>(info.tokens), info.cancelled ? "yes" : "no",
                info.hit_eos ? "yes" : "no", info.prefill_seconds * 1e3,
                info.decode_seconds * 1e3);
    if (text != stream.text || info.tokens != stream.tokens) {
        std::fprintf(stderr, "the streamed text (%u tokens) differs from the result's\n",
                     stream.tokens);
        return 100;
    }

    ac_stats stats;
    s = ac_engine_stats(engine.get(), &stats);
    if (s != AC_OK) return fail("ac_engine_stats", s);
    std::printf("stats: tasks=%llu tokens=%llu", static_cast<unsigned long long>(stats.tasks),
                static_cast<unsigned long long>(stats.tokens));
    for (int p = 0; p < AC_PRECISION_COUNT; ++p) {
        std::printf(" %s=%llu", ac_precision_name(p),
                    static_cast<unsigned long long>(stats.per_precision[p]));
    }
    std::printf(" swaps=%llu hits=%llu bytes_streamed=%llu cost=%.3f\n",
                static_cast<unsigned long long>(stats.swaps),
                static_cast<unsigned long long>(stats.hits),
                static_cast<unsigned long long>(stats.bytes_streamed), stats.cost);
    return 0;
}
