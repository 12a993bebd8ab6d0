//! The traffic light of seed 004: a light process toggles an `Event` (set =
//! green, clear = red); car processes cross on green and wait on red.
//!
//! The seed's light loops forever (and the seed falls back to threads); here a
//! second event tells the light to stop once every car has crossed, and the
//! timings are shortened so that the program ends quickly.
//!
//! Run with `cargo run --example event_traffic_light`.

use std::time::Duration;

use shmproc::{Event, Process, StartMethod};

const CARS: u32 = 10;

/// Toggles `green` until `stop` is set; returns how many times it turned green.
fn light((green, stop): (Event, Event)) -> u32 {
    let mut greens = 0;
    while !stop.is_set().expect("a sound flag") {
        if green.is_set().expect("a sound flag") {
            green.clear(); // red: cars wait
            println!("red light");
        } else {
            green.set(); // green: waiting cars go
            greens += 1;
            println!("green light");
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    greens
}

fn car((green, i): (Event, u32)) {
    if green.is_set().expect("a sound flag") {
        println!("car {i} crosses the crossing");
    } else {
        println!("car {i} waits at the crossing");
        green.wait().expect("a sound flag"); // blocks until the light is green
        println!("car {i} crosses the crossing");
    }
}

fn main() -> shmproc::Result<()> {
    let green = Event::new()?; // starts clear: red
    let stop = Event::new()?;
    let mut light = Process::builder().start_method(StartMethod::Fork).target(light, (green.clone(), stop.clone()));
    light.start()?;

    let mut cars = Vec::new();
    for i in 0..CARS {
        std::thread::sleep(Duration::from_millis(15)); // cars arrive one by one
        let mut p = Process::builder().start_method(StartMethod::Fork).target(car, (green.clone(), i));
        p.start()?;
        cars.push(p);
    }
    for mut p in cars {
        p.join()?;
    }
    println!("all {CARS} cars crossed");
    stop.set();
    let greens = light.join()?;
    println!("the light stopped after {greens} green phase(s)");
    Ok(())
}
