// Probe simulated devices in parallel, register them in order.
//
// Each device takes a while to probe (a sleep of a random length, declared
// to the pool as blocking), then waits for its own cookie and registers:
// probes overlap, registrations come out in scheduling order.
//
//     probe_devices [devices] [max probe ms]
//
// SPDX-License-Identifier: MIT
#include <kasync/kasync.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    const int devices = argc > 1 ? std::atoi(argv[1]) : 32;
    const int max_ms = argc > 2 ? std::atoi(argv[2]) : 40;
    if (devices <= 0 || max_ms <= 0) {
        std::fprintf(stderr, "usage: probe_devices [devices > 0] [max probe ms > 0]\n");
        return 2;
    }

    std::mt19937 rng(42);
    std::uniform_int_distribution<int> ms(1, max_ms);
    std::vector<int> probe_ms(devices);
    long serial_ms = 0;
    for (int& p : probe_ms)
        serial_ms += (p = ms(rng));

    kasync::scheduler s(kasync::options::from_environment());
    std::vector<int> registered;  // written only in cookie order
    auto start = std::chrono::steady_clock::now();

    for (int i = 0; i < devices; ++i) {
        s.schedule([&, i](kasync::cookie_t c) {
            {
                kasync::blocking_region blocking;  // the pool compensates
                std::this_thread::sleep_for(std::chrono::milliseconds(probe_ms[i]));
            }
            s.synchronize_cookie(c);      // every earlier device registered
            registered.push_back(i);      // the visible step, in order
        });
    }
    s.synchronize_full();
    auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start).count();

    bool in_order = int(registered.size()) == devices;
    for (int i = 0; in_order && i < devices; ++i)
        in_order = registered[i] == i;
    std::printf("devices %d, threads %u, nodes %zu\n", devices, s.threads(), s.nodes());
    std::printf("serial probe time %ld ms, wall time %lld ms, speed-up %.1fx\n",
                serial_ms, static_cast<long long>(wall),
                wall ? double(serial_ms) / double(wall) : 0.0);
    std::printf("registration order %s\n", in_order ? "verified" : "BROKEN");
    return in_order ? 0 : 1;
}
