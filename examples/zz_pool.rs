//! Throwaway pool throughput probe.
fn square(x: u64) -> u64 {
    x * x
}
fn main() {
    let p = shmproc::Pool::builder().processes(2).start_method(shmproc::StartMethod::Fork).build().unwrap();
    p.map(square, 0..2000, None).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let rs: Vec<_> = (0..10_000).map(|i| p.apply_async(square, i).unwrap()).collect();
        for r in &rs {
            r.get().unwrap();
        }
        let a = t.elapsed();
        let t = std::time::Instant::now();
        p.map(square, 0..20_000, Some(1)).unwrap();
        let m1 = t.elapsed();
        let t = std::time::Instant::now();
        p.map(square, 0..100_000, None).unwrap();
        let md = t.elapsed();
        let t = std::time::Instant::now();
        for i in 0..2000 {
            p.apply(square, i).unwrap();
        }
        let lat = t.elapsed() / 2000;
        println!(
            "apply_async {:.0}/s  map1 {:.0}/s  map_default {:.0}/s  apply latency {:?}",
            10_000.0 / a.as_secs_f64(),
            20_000.0 / m1.as_secs_f64(),
            100_000.0 / md.as_secs_f64(),
            lat
        );
    }
}
