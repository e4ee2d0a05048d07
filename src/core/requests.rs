//! The control verbs that ask something of the run: the core decides and
//! answers (Action::Answer), so the shell only carries requests and
//! replies. The answer comes before the actions of what was asked, so a
//! `pminit reload` waiting for its generation sees every note of it, even
//! a reload that ends within the same event.

use std::time::Instant;

use super::*;

impl Supervisor {
    pub(super) fn on_ask(&mut self, id: u64, ask: Ask, now: Instant, out: &mut Vec<Action>) {
        let running = self.phase == Phase::Running;
        let answer = match ask {
            Ask::Ready => {
                let why = self.readiness().err();
                Answer::Ready {
                    ready: why.is_none(),
                    why,
                }
            }
            Ask::Reload => match self.reload_target() {
                Some(generation) => Answer::AfterReload { generation },
                None => Answer::Done {
                    ok: false,
                    message: "pminit is stopping: no reload".into(),
                },
            },
            Ask::Scale(to) if running => Answer::Done {
                ok: true,
                message: format!(
                    "scaling from {} to {} workers",
                    self.instances(),
                    to.from(self.instances())
                ),
            },
            Ask::Scale(_) => Answer::Done {
                ok: false,
                message: "pminit is stopping: no scaling".into(),
            },
            Ask::Prestop => Answer::Done {
                ok: true,
                message: "draining: `pminit ready` fails from now on; still serving".into(),
            },
        };
        out.push(Action::Answer { id, answer });
        match ask {
            Ask::Reload if running => self.on_hup(out),
            Ask::Scale(to) if running => self.scale(to, now, out),
            Ask::Prestop => self.prestop(out),
            _ => {}
        }
    }

    /// `pminit prestop`: not ready from now on, still serving.
    pub(super) fn prestop(&mut self, out: &mut Vec<Action>) {
        if !self.prestopped && self.phase == Phase::Running {
            self.prestopped = true;
            out.push(Action::Log(Note::Prestop));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    fn ask(h: &mut Harness, ask: Ask, ms: u64) -> Vec<Action> {
        h.feed(Event::Asked { id: 7, ask }, ms)
    }

    #[test]
    fn a_reload_is_answered_before_its_first_note() {
        let mut h = four_ready();
        let a = ask(&mut h, Ask::Reload, 10);
        assert_eq!(
            a.first(),
            Some(&Action::Answer {
                id: 7,
                answer: Answer::AfterReload { generation: 1 }
            })
        );
        assert!(has_note(&a, |n| *n == Note::ReloadStarted { generation: 1 }));
        // Asked again meanwhile: the queued one after it.
        let a = ask(&mut h, Ask::Reload, 20);
        assert_eq!(
            a.first(),
            Some(&Action::Answer {
                id: 7,
                answer: Answer::AfterReload { generation: 2 }
            })
        );
    }

    #[test]
    fn scale_prestop_and_ready_are_answered_and_done() {
        let mut h = four_ready();
        let a = ask(&mut h, Ask::Ready, 10);
        assert_eq!(
            a,
            vec![Action::Answer {
                id: 7,
                answer: Answer::Ready {
                    ready: true,
                    why: None
                }
            }]
        );
        let a = ask(&mut h, Ask::Scale(ScaleTo::To(2)), 20);
        assert_eq!(
            a.first(),
            Some(&Action::Answer {
                id: 7,
                answer: Answer::Done {
                    ok: true,
                    message: "scaling from 4 to 2 workers".into()
                }
            })
        );
        assert_eq!(h.sup.instances(), 2);
        ask(&mut h, Ask::Prestop, 30);
        let a = ask(&mut h, Ask::Ready, 40);
        assert_eq!(
            a,
            vec![Action::Answer {
                id: 7,
                answer: Answer::Ready {
                    ready: false,
                    why: Some("draining: prestop was called".into())
                }
            }]
        );
    }

    #[test]
    fn a_stopping_run_refuses_reload_and_scale() {
        let mut h = four_ready();
        h.feed(Event::Signal(TERM), 10);
        for (what, word) in [
            (Ask::Reload, "reload"),
            (Ask::Scale(ScaleTo::Add(1)), "scaling"),
        ] {
            let a = ask(&mut h, what, 20);
            assert_eq!(
                a,
                vec![Action::Answer {
                    id: 7,
                    answer: Answer::Done {
                        ok: false,
                        message: format!("pminit is stopping: no {word}")
                    }
                }]
            );
        }
    }
}
